"""Where cachehook runs: the CI vendor and whether stdout is a terminal.

These feed two headers of the Remote Cache API: ``x-artifact-client-ci`` carries the vendor's
constant as turbo spells it (``GITHUB_ACTIONS``, ``GITLAB``, ``CIRCLE``, ``VERCEL``, ...) and
``x-artifact-client-interactive`` is ``1`` when stdout is a terminal, else ``0``.

The vendor table follows turbo's ``turborepo-ci`` crate: the first vendor whose variables match
wins. A vendor matches when its ``equals`` variable has exactly that value, or any of its ``any``
variables is non-empty, or all of its ``every`` variables are non-empty. A matched vendor is
itself the evidence of running in CI (Azure Pipelines and CodeBuild, for instance, set no ``CI``),
so unlike turbo's upload path there is no separate ``is_ci()`` gate on the header.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NamedTuple, TextIO

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["CI_HEADER_MAX_LENGTH", "detect_ci_vendor", "is_ci", "is_interactive"]

CI_HEADER_MAX_LENGTH = 50  # the API's maxLength for x-artifact-client-ci

# Set by CI systems that no vendor entry names (turbo's is_ci list).
_GENERIC_CI_VARIABLES = (
    "BUILD_ID",
    "BUILD_NUMBER",
    "CI",
    "CI_APP_ID",
    "CI_BUILD_ID",
    "CI_BUILD_NUMBER",
    "CI_NAME",
    "CONTINUOUS_INTEGRATION",
    "RUN_ID",
    "TEAMCITY_VERSION",
)


# A NamedTuple, not a frozen dataclass: ``cachehook exec`` asks ``is_ci`` on every remote hit,
# and importing ``dataclasses`` (with ``inspect``) costs it milliseconds (issue 11).
class _Vendor(NamedTuple):
    constant: str
    any: tuple[str, ...] = ()
    every: tuple[str, ...] = ()
    equals: tuple[str, str] | None = None

    def matches(self, environ: Mapping[str, str]) -> bool:
        if self.equals is not None:
            name, value = self.equals
            return environ.get(name) == value
        if self.any:
            return any(environ.get(name) for name in self.any)
        return bool(self.every) and all(environ.get(name) for name in self.every)


# In turbo's order: the first match wins (e.g. Jenkins needs both JENKINS_URL and BUILD_ID).
_VENDORS = (
    _Vendor("APPCIRCLE", any=("AC_APPCIRCLE",)),
    _Vendor("APPVEYOR", any=("APPVEYOR",)),
    _Vendor("CODEBUILD", any=("CODEBUILD_BUILD_ARN",)),
    _Vendor("AZURE_PIPELINES", any=("SYSTEM_TEAMFOUNDATIONCOLLECTIONURI",)),
    _Vendor("BAMBOO", any=("bamboo_planKey",)),
    _Vendor("BITBUCKET", any=("BITBUCKET_COMMIT",)),
    _Vendor("BITRISE", any=("BITRISE_IO",)),
    _Vendor("BUDDY", any=("BUDDY_WORKSPACE_ID",)),
    _Vendor("BUILDKITE", any=("BUILDKITE",)),
    _Vendor("CIRCLE", any=("CIRCLECI",)),
    _Vendor("CIRRUS", any=("CIRRUS_CI",)),
    _Vendor("CODEFRESH", any=("CF_BUILD_ID",)),
    _Vendor("CODEMAGIC", any=("CM_BUILD_ID",)),
    _Vendor("CODESHIP", equals=("CI_NAME", "codeship")),
    _Vendor("DRONE", any=("DRONE",)),
    _Vendor("DSARI", any=("DSARI",)),
    _Vendor("EAS", any=("EAS_BUILD",)),
    _Vendor("GITHUB_ACTIONS", any=("GITHUB_ACTIONS",)),
    _Vendor("GITLAB", any=("GITLAB_CI",)),
    _Vendor("GOCD", any=("GO_PIPELINE_LABEL",)),
    _Vendor("GOOGLE_CLOUD_BUILD", any=("BUILDER_OUTPUT",)),
    _Vendor("LAYERCI", any=("LAYERCI",)),
    _Vendor("GERRIT", any=("GERRIT_PROJECT",)),
    _Vendor("HUDSON", any=("HUDSON",)),
    _Vendor("JENKINS", every=("JENKINS_URL", "BUILD_ID")),
    _Vendor("MAGNUM", any=("MAGNUM",)),
    _Vendor("NETLIFY", any=("NETLIFY",)),
    _Vendor("NEVERCODE", any=("NEVERCODE",)),
    _Vendor("RELEASEHUB", any=("RELEASE_BUILD_ID",)),
    _Vendor("RENDER", any=("RENDER",)),
    _Vendor("SAIL", any=("SAILCI",)),
    _Vendor("SCREWDRIVER", any=("SCREWDRIVER",)),
    _Vendor("SEMAPHORE", any=("SEMAPHORE",)),
    _Vendor("SHIPPABLE", any=("SHIPPABLE",)),
    _Vendor("SOLANO", any=("TDDIUM",)),
    _Vendor("SOURCEHUT", equals=("CI_NAME", "sourcehut")),
    _Vendor("STRIDER", any=("STRIDER",)),
    _Vendor("TASKCLUSTER", any=("TASK_ID", "RUN_ID")),
    _Vendor("TEAMCITY", any=("TEAMCITY_VERSION",)),
    _Vendor("TRAVIS", any=("TRAVIS",)),
    _Vendor("VERCEL", any=("NOW_BUILDER", "VERCEL")),
    _Vendor("APPCENTER", any=("APPCENTER",)),
    _Vendor("WOODPECKER", equals=("CI", "woodpecker")),
    _Vendor("XCODE_CLOUD", any=("CI_XCODE_PROJECT",)),
    _Vendor("XCODE_SERVER", any=("XCS",)),
)


def detect_ci_vendor(environ: Mapping[str, str]) -> str | None:
    """Return the CI vendor's constant for ``x-artifact-client-ci``, or None outside CI.

    Args:
        environ: the environment to inspect (usually ``os.environ``).

    Returns:
        turbo's constant for the first matching vendor, at most 50 characters.
    """
    for vendor in _VENDORS:
        if vendor.matches(environ):
            return vendor.constant[:CI_HEADER_MAX_LENGTH]
    return None


def is_ci(environ: Mapping[str, str]) -> bool:
    """Whether this looks like a CI run: a generic CI variable is set or a vendor matches."""
    if any(environ.get(name) for name in _GENERIC_CI_VARIABLES):
        return True
    return detect_ci_vendor(environ) is not None


def is_interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: the current ``sys.stdout``) is a terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no stdout, or a closed one
        return False
