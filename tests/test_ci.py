from __future__ import annotations

import io

import pytest

from cachehook.ci import _VENDORS, CI_HEADER_MAX_LENGTH, detect_ci_vendor, is_ci, is_interactive


@pytest.mark.parametrize(
    ("environ", "vendor"),
    [
        ({"CI": "true", "GITHUB_ACTIONS": "true"}, "GITHUB_ACTIONS"),
        ({"CI": "true", "GITLAB_CI": "true"}, "GITLAB"),
        ({"CI": "true", "CIRCLECI": "true"}, "CIRCLE"),
        ({"CI": "1", "VERCEL": "1"}, "VERCEL"),
        ({"NOW_BUILDER": "1"}, "VERCEL"),
        ({"BUILDKITE": "true"}, "BUILDKITE"),
        ({"TRAVIS": "true"}, "TRAVIS"),
        ({"JENKINS_URL": "http://j", "BUILD_ID": "7"}, "JENKINS"),
        ({"SYSTEM_TEAMFOUNDATIONCOLLECTIONURI": "https://dev.azure.com/x/"}, "AZURE_PIPELINES"),
        ({"BITBUCKET_COMMIT": "abc"}, "BITBUCKET"),
        ({"CODEBUILD_BUILD_ARN": "arn:aws:codebuild:x"}, "CODEBUILD"),
        ({"bamboo_planKey": "PLAN"}, "BAMBOO"),
        ({"CI_NAME": "codeship"}, "CODESHIP"),
        ({"CI_NAME": "sourcehut"}, "SOURCEHUT"),
        ({"CI": "woodpecker"}, "WOODPECKER"),
        ({"TEAMCITY_VERSION": "2024.1"}, "TEAMCITY"),
        ({"RUN_ID": "3"}, "TASKCLUSTER"),
    ],
)
def test_detect_ci_vendor_returns_turbos_constant(environ: dict[str, str], vendor: str) -> None:
    assert detect_ci_vendor(environ) == vendor
    assert is_ci(environ)


def test_jenkins_needs_both_variables() -> None:
    # BUILD_ID alone is generic CI, but names no vendor (turbo's "Jenkins - failing" case).
    assert detect_ci_vendor({"BUILD_ID": "7"}) is None
    assert is_ci({"BUILD_ID": "7"})


def test_empty_values_do_not_count() -> None:
    assert detect_ci_vendor({"GITHUB_ACTIONS": "", "CI": ""}) is None
    assert not is_ci({"GITHUB_ACTIONS": "", "CI": ""})


def test_outside_ci_there_is_no_vendor() -> None:
    assert detect_ci_vendor({"HOME": "/home/me", "PATH": "/usr/bin"}) is None
    assert not is_ci({"HOME": "/home/me"})


def test_generic_ci_without_a_known_vendor() -> None:
    assert detect_ci_vendor({"CI": "true"}) is None
    assert is_ci({"CI": "true"})


def test_first_vendor_in_table_order_wins() -> None:
    # turbo's order: GitHub Actions comes before Vercel.
    assert detect_ci_vendor({"VERCEL": "1", "GITHUB_ACTIONS": "true"}) == "GITHUB_ACTIONS"


def test_every_constant_fits_the_header() -> None:
    assert len(_VENDORS) == 45
    assert all(len(v.constant) <= CI_HEADER_MAX_LENGTH for v in _VENDORS)
    assert len({v.constant for v in _VENDORS}) == len(_VENDORS)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_is_interactive_follows_the_stream() -> None:
    assert is_interactive(_Tty()) is True
    assert is_interactive(io.StringIO()) is False


def test_is_interactive_with_a_closed_stream() -> None:
    stream = io.StringIO()
    stream.close()
    assert is_interactive(stream) is False


def test_is_interactive_defaults_to_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", _Tty())
    assert is_interactive() is True
    monkeypatch.setattr("sys.stdout", None)
    assert is_interactive() is False
