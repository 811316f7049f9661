"""Podman for the container test: its settings, a Debian base image made locally, the image's build.

No registry is needed: the base image comes from debootstrap and is tagged as the Dockerfile's
``debian:bookworm-slim``; builds never pull. Storage lives in a scratch directory of its own
(``BERTSERVE_CONTAINER_STORE``, else under the system's temporary directory), so the base image
is made once and reused by later runs, and podman's settings elsewhere on the machine stay as
they are.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IMAGE = "localhost/bertserve:test"
BASE = "localhost/debian-base:bookworm"
BASE_ALIAS = "docker.io/library/debian:bookworm-slim"  # what `FROM debian:bookworm-slim` resolves to
#: Where the build finds the host's CA bundle and wheel directory; paths inside the build only.
BUILD_CA = "/run/build-ca.crt"
BUILD_WHEELS = "/run/build-wheels"


def store_dir() -> Path:
    default = Path(tempfile.gettempdir()) / "bertserve-containers"
    return Path(os.environ.get("BERTSERVE_CONTAINER_STORE", default))


class Podman:
    """The podman command with its own containers.conf and storage.conf (both named by environment)."""

    def __init__(self, store: Path) -> None:
        store.mkdir(parents=True, exist_ok=True)
        # Root without CAP_SYS_RESOURCE cannot raise limits to podman's default of 1048576 files,
        # so containers get the hard limits this process has. crun rejects hybrid cgroup layouts;
        # runc takes them.
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
        if nofile == resource.RLIM_INFINITY:
            nofile = 1048576
        conf = store / "containers.conf"
        conf.write_text(
            f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            '\n[engine]\nruntime = "runc"\n'
        )
        storage = store / "storage.conf"
        storage.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{store / "graph"}"\nrunroot = "{store / "run"}"\n'
        )
        self.store = store
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}

    def __call__(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}")
        return result

    def image_exists(self, name: str) -> bool:
        return self("image", "exists", name, check=False).returncode == 0

    def ensure_base_image(self) -> None:
        """A minimal Debian bookworm from the mirror apt uses here, made once, as `debian:bookworm-slim`."""
        if not self.image_exists(BASE):
            rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=self.store))
            try:
                subprocess.run(
                    ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), apt_mirror()],
                    capture_output=True,
                    text=True,
                    timeout=900,
                    check=True,
                )
                # Smaller, and apt in the build fetches fresh lists anyway. A snapshot mirror's
                # lists carry an expired Valid-Until.
                for leftover in [*rootfs.glob("var/cache/apt/archives/*.deb"), *rootfs.glob("var/lib/apt/lists/*")]:
                    if leftover.is_file():
                        leftover.unlink()
                (rootfs / "etc/apt/apt.conf.d/99no-check-valid-until").write_text(
                    'Acquire::Check-Valid-Until "false";\n'
                )
                tar = subprocess.Popen(
                    ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
                )
                subprocess.run(
                    [
                        "podman",
                        "import",
                        "--change",
                        'CMD ["/bin/bash"]',
                        "--change",
                        "ENV LANG=C.UTF-8",
                        "-",
                        BASE,
                    ],
                    stdin=tar.stdout,
                    env=self.env,
                    capture_output=True,
                    timeout=300,
                    check=True,
                )
                assert tar.wait() == 0, "tar of the base image's root failed"
            finally:
                shutil.rmtree(rootfs, ignore_errors=True)
        if not self.image_exists(BASE_ALIAS):
            self("tag", BASE, BASE_ALIAS)

    def build(self, tag: str = IMAGE, *build_args: str) -> str:
        """Build deploy/Dockerfile with the repository as context; the log (for a failure message)."""
        cert, wheels = pip_sources()
        mounts: list[str] = []
        if cert:
            mounts += ["-v", f"{cert}:{BUILD_CA}:ro", "--build-arg", f"PIP_CERT={BUILD_CA}"]
        if wheels:
            # The local wheels hold the CPU torch build: take it from there rather than an index.
            mounts += ["-v", f"{wheels}:{BUILD_WHEELS}:ro", "--build-arg", f"PIP_FIND_LINKS={BUILD_WHEELS}"]
            mounts += ["--build-arg", "TORCH_INDEX_URL="]
        previous = self("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
        result = self(
            "build",
            "--pull=never",
            "--network",
            "host",
            "--format",
            "docker",  # keeps HEALTHCHECK, as docker's builds do; OCI images have no such field
            "-f",
            str(DOCKERFILE),
            "-t",
            tag,
            *mounts,
            *build_args,
            str(ROOT),
            timeout=1500,
        )
        if previous and previous != self("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip():
            self("rmi", previous, check=False)  # the last build's image: a rebuild would pile them up
        return result.stdout + result.stderr


def apt_mirror() -> str:
    """The Debian mirror apt uses here, from the first deb822 source that lists bookworm."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in sources.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#")
            )
            if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs", "").split():
                return fields["URIs"].split()[0]
    raise AssertionError("no deb822 apt source (/etc/apt/sources.list.d/*.sources) lists bookworm")


def pip_sources() -> tuple[str | None, str | None]:
    """pip's CA bundle and local wheel directory here (`pip config list`), each where it exists."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    found: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        found.setdefault(name, value.strip().strip("'\"").split()[0] if value.strip("'\" ") else "")
    cert = found.get("cert") or os.environ.get("PIP_CERT")
    wheels = found.get("find-links") or os.environ.get("PIP_FIND_LINKS")
    return (cert if cert and Path(cert).is_file() else None, wheels if wheels and Path(wheels).is_dir() else None)


class Dockerfile:
    """The instructions of a Dockerfile, continuation lines joined, comments dropped."""

    def __init__(self, path: Path = DOCKERFILE) -> None:
        text = path.read_text()
        lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        joined = "\n".join(lines).replace("\\\n", " ")
        self.instructions: list[tuple[str, str]] = []
        for line in joined.splitlines():
            if line.strip():
                keyword, _, rest = line.strip().partition(" ")
                self.instructions.append((keyword.upper(), rest.strip()))

    def all(self, keyword: str) -> list[str]:
        return [rest for key, rest in self.instructions if key == keyword]

    @property
    def final_stage(self) -> list[tuple[str, str]]:
        starts = [i for i, (key, _) in enumerate(self.instructions) if key == "FROM"]
        return self.instructions[starts[-1] :]

    def final(self, keyword: str) -> list[str]:
        return [rest for key, rest in self.final_stage if key == keyword]

    @property
    def user(self) -> tuple[int, int | None]:
        """The final stage's USER as numbers (uid, gid): a name could not be checked against runAsUser."""
        uid, _, gid = self.final("USER")[-1].partition(":")
        return int(uid), int(gid) if gid else None

    @property
    def env(self) -> dict[str, str]:
        """The final stage's ENV (KEY=VALUE forms)."""
        values: dict[str, str] = {}
        for rest in self.final("ENV"):
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                values[key] = value
        return values

    @property
    def exposed(self) -> set[int]:
        return {int(port.split("/")[0]) for rest in self.final("EXPOSE") for port in rest.split()}

    @property
    def volumes(self) -> list[str]:
        found: list[str] = []
        for rest in self.final("VOLUME"):
            found += json.loads(rest) if rest.startswith("[") else rest.split()
        return found
