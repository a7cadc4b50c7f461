"""The real Node clients against ``cachehook serve`` (issue 12), installed by npm into ``.peers``.

- ``@vercel/sdk`` 1.28.35: the ``recordEvents`` example from Vercel's docs, verbatim
  (``resources/vercel_sdk_record_events.mjs``, ``sessionId: "<id>"``), and ``uploadArtifact``,
  ``artifactExists``, ``artifactQuery``, ``downloadArtifact``, ``deleteAllArtifacts``;
- a real Nx 17 workspace with ``@vercel/remote-nx`` 2.0.0: a miss that uploads, then, with Nx's
  local cache and the outputs wiped, a remote hit that restores them;
- ``@vercel/remote`` 1.0.1 with no team (Vercel's personal scope): the token's default team.

The clients' addresses are fixed (``api.vercel.com``, ``vercel.com/api``), so each runs with
``resources/redirect_vercel.cjs`` preloaded, which sends their requests to the test's server and
refuses any other https request. Their own code is unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from cachehook.config import DEFAULT_MAX_SIZE
from cachehook.store import LocalStore
from tests.server.conftest import API, SLASH
from tests.servers import install_node_clients

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.server.conftest import Serve

pytestmark = pytest.mark.integration

RESOURCES = Path(__file__).parent / "resources"
SNIPPET_TOKEN = "<YOUR_BEARER_TOKEN_HERE>"  # the docs' placeholder, used as is
SNIPPET_TEAM = "team_1a2b3c4d5e6f7g8h9i0j1k2l"
SNIPPET_TOKENS = f"""
[[token]]
name = "docs-example"
token = "{SNIPPET_TOKEN}"
scopes = ["read", "write", "admin"]
teams = ["{SNIPPET_TEAM}", "my-team-url-slug", "nx-team"]
default-team = "nx-team"
"""


@pytest.fixture(scope="session")
def node_modules() -> Path:
    return install_node_clients()


def node_project(root: Path, node_modules: Path) -> Path:
    """A directory whose ``node_modules`` is the installed peers (ESM resolves from files)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "node_modules").symlink_to(node_modules, target_is_directory=True)
    return root


def run_node(
    args: list[str], *, cwd: Path, serve: Serve, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node is not None
    environ = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd),
        "CACHEHOOK_TEST_SERVER": serve.url,
        "NODE_OPTIONS": f"--require {RESOURCES / 'redirect_vercel.cjs'}",
        **(env or {}),
    }
    return subprocess.run(
        [node, *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def team_row(serve: Serve, team: str) -> dict[str, Any]:
    stats = httpx.get(f"{serve.url}{SLASH}api{SLASH}stats").json()
    rows = [row for row in stats["by_team"] if row["team"] == team]
    assert rows, stats
    return dict(rows[0])


# -- @vercel/sdk -------------------------------------------------------------------------


def test_the_docs_record_events_example_verbatim(
    serve_factory: Callable[..., Serve], node_modules: Path, tmp_path: Path
) -> None:
    serve = serve_factory(extra_tokens=SNIPPET_TOKENS)
    project = node_project(tmp_path / "sdk", node_modules)
    script = project / "example.mjs"
    shutil.copy(RESOURCES / "vercel_sdk_record_events.mjs", script)
    done = run_node([str(script)], cwd=project, serve=serve)
    assert done.returncode == 0, done.stdout + done.stderr  # the SDK throws on any refusal
    row = team_row(serve, SNIPPET_TEAM)
    assert (row["lookups"], row["hits"], row["time_saved_ms"]) == (1, 1, 400)
    assert row["by_source"]["LOCAL"]["hits"] == 1
    # run again (a retry): counted once
    again = run_node([str(script)], cwd=project, serve=serve)
    assert again.returncode == 0, again.stderr
    assert team_row(serve, SNIPPET_TEAM)["time_saved_ms"] == 400


SDK_ARTIFACTS = """
import { Vercel } from "@vercel/sdk";

const vercel = new Vercel({ bearerToken: process.env.TOKEN });
const slug = process.env.SLUG;
const hash = process.env.HASH;
const body = new TextEncoder().encode(`artifact ${hash} `.repeat(5000));
const uploaded = await vercel.artifacts.uploadArtifact({
  contentLength: body.length, xArtifactDuration: 1234, hash, slug, requestBody: body,
});
await vercel.artifacts.artifactExists({ hash, slug });
const query = await vercel.artifacts.artifactQuery({ slug, requestBody: { hashes: [hash] } });
const stream = await vercel.artifacts.downloadArtifact({ hash, slug });
const chunks = [];
for await (const chunk of stream) chunks.push(chunk);
const downloaded = Buffer.concat(chunks);
const deleted = await vercel.artifacts.deleteAllArtifacts({ slug });
let afterwards = "found";
try {
  await vercel.artifacts.artifactExists({ hash, slug });
} catch (error) {
  afterwards = error.statusCode ?? String(error);
}
console.log(JSON.stringify({
  urls: uploaded.urls, query, same: Buffer.from(body).equals(downloaded),
  deleted, afterwards,
}));
"""


def test_the_sdk_uploads_downloads_and_deletes_all(
    serve_factory: Callable[..., Serve], node_modules: Path, tmp_path: Path
) -> None:
    serve = serve_factory(extra_tokens=SNIPPET_TOKENS)
    project = node_project(tmp_path / "sdk", node_modules)
    (project / "artifacts.mjs").write_text(SDK_ARTIFACTS)
    hash_ = "12HKQaOmR5t5Uy6vdcQsNIiZgHGB"
    env = {"TOKEN": SNIPPET_TOKEN, "SLUG": "my-team-url-slug", "HASH": hash_}
    done = run_node(["artifacts.mjs"], cwd=project, serve=serve, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["urls"] == [f"{API}{SLASH}{hash_}?slug=my-team-url-slug"]
    assert result["query"][hash_]["taskDurationMs"] == 1234
    assert result["same"] is True
    assert result["deleted"] == {"deletedCount": 1}
    assert result["afterwards"] == 404


# -- Nx + @vercel/remote-nx ----------------------------------------------------------------

_NX_BUILD = (
    "node -e \"require('fs').mkdirSync('apps/app/dist',{recursive:true});"
    "require('fs').writeFileSync('apps/app/dist/out.txt','built by nx\\\\n');"
    "console.log('app built')\""
)


def make_nx_workspace(root: Path, node_modules: Path) -> Path:
    node_project(root, node_modules)
    (root / "package.json").write_text(json.dumps({"name": "nxws", "private": True}))
    nx_json = {
        "tasksRunnerOptions": {
            "default": {
                "runner": "@vercel/remote-nx",
                "options": {"cacheableOperations": ["build"], "verbose": True},
            }
        },
        "targetDefaults": {"build": {"outputs": ["{projectRoot}/dist"]}},
    }
    (root / "nx.json").write_text(json.dumps(nx_json))
    app = root / "apps" / "app"
    app.mkdir(parents=True)
    project = {
        "name": "app",
        "root": "apps/app",
        "targets": {
            "build": {
                "executor": "nx:run-commands",
                "options": {"command": _NX_BUILD},
                "outputs": ["{projectRoot}/dist"],
            }
        },
    }
    (app / "project.json").write_text(json.dumps(project))
    (app / "src.txt").write_text("source\n")
    return root


def run_nx(root: Path, serve: Serve, node_modules: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "NX_VERCEL_REMOTE_CACHE_TOKEN": SNIPPET_TOKEN,  # no team: the token's default-team
        "NX_CACHE_DIRECTORY": str(root / "nx-cache"),
        "NX_PROJECT_GRAPH_CACHE_DIRECTORY": str(root / "nx-graph"),
        "NX_DAEMON": "false",
        "NX_NO_CLOUD": "true",
        "NX_SKIP_NX_CACHE": "false",
        "NX_TUI": "false",
        "CI": "1",
    }
    nx = node_modules / "nx" / "bin" / "nx.js"
    return run_node([str(nx), "run", "app:build"], cwd=root, serve=serve, env=env)


def test_nx_with_remote_nx_misses_uploads_then_hits_remotely(
    serve_factory: Callable[..., Serve], node_modules: Path, tmp_path: Path
) -> None:
    serve = serve_factory(extra_tokens=SNIPPET_TOKENS)
    root = make_nx_workspace(tmp_path / "nxws", node_modules)
    first = run_nx(root, serve, node_modules)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "app built" in first.stdout
    assert "Stored output to remote cache" in first.stdout, first.stdout
    assert "[remote cache]" not in first.stdout
    stored = list_team_artifacts(serve, "nx-team")  # no team was sent: the default team
    assert len(stored) == 1, (stored, first.stdout + first.stderr)
    (key,) = stored
    assert re.fullmatch(r"[0-9]+\.tar\.gz", key)  # refused as "not hex" before issue 12

    shutil.rmtree(root / "nx-cache")  # Nx's local cache
    shutil.rmtree(root / "apps" / "app" / "dist")
    second = run_nx(root, serve, node_modules)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"Remote cache hit: Vercel Remote Cache\nFile: {key}" in second.stdout, second.stdout
    assert "nx run app:build  [remote cache]" in second.stdout
    assert (root / "apps" / "app" / "dist" / "out.txt").read_text() == "built by nx\n"


def list_team_artifacts(serve: Serve, team: str) -> list[str]:
    """The artifact ids a team holds, read from the server's store."""
    with LocalStore(serve.storage / "artifacts", max_size=DEFAULT_MAX_SIZE) as store:
        prefix = f"v8/{team}/"
        return [e.key[len(prefix) :] for e in store.entries() if e.key.startswith(prefix)]


# -- @vercel/remote ------------------------------------------------------------------------

REMOTE_CLIENT = """
const { createClient } = require("@vercel/remote");
const { Readable } = require("stream");

async function main() {
  const remote = createClient(process.env.TOKEN, { product: "cachehook-test" });
  const hash = "13488902816378295538.tar.gz";
  const before = await remote.exists(hash).send();
  await remote.put(hash, { duration: 321 }).buffer(Buffer.from("personal scope"));
  const after = await remote.exists(hash).send();
  const body = await remote.get(hash).buffer();
  console.log(JSON.stringify({ before, after, body: body.toString() }));
}
main().catch((error) => { console.error(error); process.exit(1); });
"""


def test_vercel_remote_without_a_team_uses_the_default_team(
    serve_factory: Callable[..., Serve], node_modules: Path, tmp_path: Path
) -> None:
    serve = serve_factory(extra_tokens=SNIPPET_TOKENS)
    project = node_project(tmp_path / "remote", node_modules)
    (project / "client.cjs").write_text(REMOTE_CLIENT)
    done = run_node(["client.cjs"], cwd=project, serve=serve, env={"TOKEN": SNIPPET_TOKEN})
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"before": False, "after": True, "body": "personal scope"}
    got = httpx.get(
        f"{serve.url}{API}{SLASH}13488902816378295538.tar.gz",
        params={"slug": "nx-team"},
        headers={"Authorization": f"Bearer {SNIPPET_TOKEN}"},
    )
    assert got.content == b"personal scope"
    assert got.headers["x-artifact-duration"] == "321"
