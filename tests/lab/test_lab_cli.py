"""Tests of lab/lab.sh and lab/build.sh that need no VM, no image and no network.

They run the real scripts with LAB_RUN/LAB_CACHE pointed at temporary directories, so a lab that
is running in lab/run is never touched. The VM-booting checks are in test_lab_vms.py (opt-in).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "lab"
LAB_SH = LAB / "lab.sh"
BUILD_SH = LAB / "build.sh"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the lab is Linux-only")


def run(args, env_extra=None, cwd=None, timeout=60):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run(
        args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        check=False,
    )


@pytest.fixture
def labenv(tmp_path):
    """Private run/cache dirs and ports nobody listens on (taken from the kernel, then released)."""
    ports = []
    socks = []
    for dummy in range(3):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        socks.append(s)
    for s in socks:
        s.close()
    return {
        "LAB_RUN": str(tmp_path / "run"),
        "LAB_CACHE": str(tmp_path / "cache"),
        "LAB_SSH_PORT1": str(ports[0]),
        "LAB_SSH_PORT2": str(ports[1]),
        "LAB_LINK_PORT": str(ports[2]),
    }


def test_help_lists_every_subcommand():
    r = run(["bash", str(LAB_SH), "help"])
    assert r.returncode == 0
    for sub in ("setup", "build", "up", "down", "status", "ssh N", "clean"):
        assert f"lab.sh {sub}" in r.stdout


def test_unknown_subcommand_is_a_usage_error():
    r = run(["bash", str(LAB_SH), "explode"])
    assert r.returncode == 2
    assert "lab.sh up" in r.stderr


def test_down_is_safe_without_a_run_dir(labenv):
    r = run(["bash", str(LAB_SH), "down"], labenv)
    assert r.returncode == 0, r.stderr
    assert not Path(labenv["LAB_RUN"]).exists()


def test_down_is_safe_with_an_empty_run_dir(labenv):
    Path(labenv["LAB_RUN"]).mkdir()
    r = run(["bash", str(LAB_SH), "down"], labenv)
    assert r.returncode == 0, r.stderr
    assert "nothing was running" in r.stderr


def test_down_never_kills_a_foreign_process_behind_a_stale_pid_file(labenv):
    """A PID file whose PID now belongs to another process: the file goes, the process lives."""
    run_dir = Path(labenv["LAB_RUN"])
    run_dir.mkdir()
    victim = subprocess.Popen(["sleep", "60"])
    try:
        (run_dir / "vm1.pid").write_text(f"{victim.pid}\n")
        r = run(["bash", str(LAB_SH), "down"], labenv)
        assert r.returncode == 0, r.stderr
        assert "lab1 was not running (stale PID file removed)" in r.stderr
        assert victim.poll() is None, "lab.sh down killed a process that is not its QEMU"
        assert not (run_dir / "vm1.pid").exists()
    finally:
        victim.kill()
        victim.wait()


def test_status_when_down_says_so_and_fails(labenv):
    r = run(["bash", str(LAB_SH), "status"], labenv)
    assert r.returncode == 1
    assert "lab1: not running" in r.stdout
    assert "lab2: not running" in r.stdout
    assert "image: not built for the current inputs" in r.stdout


def test_status_names_the_process_on_a_taken_port(labenv):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(labenv["LAB_SSH_PORT1"])))
        s.listen()
        r = run(["bash", str(LAB_SH), "status"], labenv)
    assert r.returncode == 1
    assert f"lab1: not running (but 127.0.0.1:{labenv['LAB_SSH_PORT1']} is taken" in r.stdout
    assert "python" in r.stdout  # ss -p names the listener


@pytest.mark.parametrize("knob", ["LAB_SSH_PORT1", "LAB_SSH_PORT2", "LAB_LINK_PORT"])
def test_up_refuses_a_port_in_use_before_building_anything(labenv, knob):
    port = int(labenv[knob])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        r = run(["bash", str(LAB_SH), "up"], labenv)
    assert r.returncode != 0
    assert f"127.0.0.1:{port} is already in use" in r.stderr
    assert "lab.sh down" in r.stderr and knob in r.stderr
    # nothing was built or started: no cache, no overlay, no PID file
    assert not Path(labenv["LAB_CACHE"]).exists()
    assert not list(Path(labenv["LAB_RUN"]).glob("vm*"))


@pytest.mark.parametrize(
    "knob, value, message",
    [
        ("LAB_MEM", "1G", "LAB_MEM must be a number, got '1G'"),
        ("LAB_CPUS", "two", "LAB_CPUS must be a number, got 'two'"),
        ("LAB_SSH_PORT1", "22; reboot", "LAB_SSH_PORT1 must be a number"),
        ("LAB_SSH_TIMEOUT", "5m", "LAB_SSH_TIMEOUT must be a number, got '5m'"),
    ],
)
def test_bad_knobs_are_refused_by_name(labenv, knob, value, message):
    r = run(["bash", str(LAB_SH), "up"], {**labenv, knob: value})
    assert r.returncode != 0
    assert message in r.stderr
    assert not Path(labenv["LAB_RUN"]).exists()


def test_ports_must_differ(labenv):
    r = run(["bash", str(LAB_SH), "status"], {**labenv, "LAB_SSH_PORT2": labenv["LAB_SSH_PORT1"]})
    assert r.returncode != 0
    assert "must differ" in r.stderr


@pytest.mark.parametrize("argv", [["ssh"], ["ssh", "3"], ["ssh", "1;id"]])
def test_ssh_needs_vm_1_or_2(labenv, argv):
    r = run(["bash", str(LAB_SH), *argv], labenv)
    assert r.returncode != 0
    assert "usage: lab.sh ssh 1|2" in r.stderr


def test_ssh_when_down_says_to_run_up(labenv):
    r = run(["bash", str(LAB_SH), "ssh", "1", "true"], labenv)
    assert r.returncode != 0
    assert "the lab is not up (lab.sh up)" in r.stderr


# --- build cache key ------------------------------------------------------------------------------


@pytest.fixture
def labcopy(tmp_path):
    """A copy of the image inputs, so the key can be probed with edited inputs."""
    dst = tmp_path / "lab"
    dst.mkdir()
    shutil.copy2(BUILD_SH, dst / "build.sh")
    shutil.copy2(LAB / "packages.txt", dst / "packages.txt")
    shutil.copytree(LAB / "vm", dst / "vm")
    shutil.copytree(LAB / "sim", dst / "sim")
    return dst


def key_of(labdir: Path, **env) -> str:
    r = run(["bash", str(labdir / "build.sh"), "key"], env)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_cache_key_is_stable_and_follows_every_input(labcopy):
    base = key_of(labcopy)
    assert len(base) == 16 and all(c in "0123456789abcdef" for c in base)
    assert key_of(labcopy) == base
    assert key_of(LAB) == base  # the copy keys like the original: the key is content, not path
    for rel in ("packages.txt", "build.sh", "vm/init", "vm/customize.sh", "vm/essential.sh", "sim/ipsec.c",
                "sim/apply.sh", "sim/devlink.c"):
        f = labcopy / rel
        original = f.read_text()
        f.write_text(original + "\n# changed\n")
        assert key_of(labcopy) != base, f"editing {rel} must change the cache key"
        f.write_text(original)
    assert key_of(labcopy) == base
    assert key_of(labcopy, LAB_SUITE="forky") != base
    assert key_of(labcopy, LAB_DISK_SIZE="8G") != base


def test_image_dir_is_under_the_cache_and_named_by_the_key(labcopy, tmp_path):
    cache = tmp_path / "c"
    r = run(["bash", str(labcopy / "build.sh"), "dir"], {"LAB_CACHE": str(cache)})
    assert r.returncode == 0
    assert r.stdout.strip() == f"{cache}/image-{key_of(labcopy)}"


def test_build_sh_rejects_unknown_subcommands(labcopy):
    r = run(["bash", str(labcopy / "build.sh"), "frobnicate"])
    assert r.returncode != 0
    assert "usage: build.sh [build|key|dir|packages [main|build]]" in r.stderr


def test_package_list_splits_image_and_build_only_packages():
    """packages.txt: what the image keeps vs what is purged after building netdevsim."""
    # the default image variant (strongswan); LAB_VARIANT=libreswan swaps the '@strongswan' lines for '@libreswan'
    script = (f'source <(sed -n "/^packages()/,/^}}/p" {BUILD_SH}); LAB_DIR={LAB}; VARIANT=strongswan; packages main; echo --; '
              f'packages build; echo --; VARIANT=libreswan packages main')
    r = run(["bash", "-c", script])
    assert r.returncode == 0, r.stderr
    main, build, libre = r.stdout.split("--\n")
    main, build, libre = main.split(), build.split(), libre.split()
    assert "libreswan" not in main and "libreswan" in libre
    assert not {"strongswan-swanctl", "strongswan-charon"} & set(libre)
    assert set(main) - {"strongswan-swanctl", "strongswan-charon"} == set(libre) - {"libreswan"}
    for pkg in ("linux-image-amd64", "iproute2", "openvswitch-switch", "python3", "openssh-server",
                "ethtool", "tcpdump", "iputils-ping", "kmod", "strongswan-swanctl", "strongswan-charon",
                "rdma-core", "ibverbs-utils", "ibverbs-providers", "perftest"):
        assert pkg in main
    assert build == ["linux-headers-amd64", "linux-source", "make"]
    assert not set(main) & set(build)
    assert not any(p.startswith(("#", "@")) for p in main + build)


def test_clean_refuses_while_another_process_uses_the_cache(labenv):
    """Another lab (another LAB_RUN, e.g. molecule's) may boot from the same image cache."""
    cache = Path(labenv["LAB_CACHE"])
    (cache / "image-0123456789abcdef").mkdir(parents=True)
    base = cache / "image-0123456789abcdef" / "base.qcow2"
    base.write_bytes(b"QFI\xfb")
    holder = subprocess.Popen(["bash", "-c", f"exec 3<{base}; sleep 60"])
    try:
        for dummy in range(50):  # until bash has opened the file
            if any(os.path.realpath(f"/proc/{holder.pid}/fd/{fd}") == str(base)
                   for fd in os.listdir(f"/proc/{holder.pid}/fd")):
                break
            time.sleep(0.1)
        r = run(["bash", str(LAB_SH), "clean"], labenv)
        assert r.returncode != 0
        assert f"process {holder.pid} (" in r.stderr and "still uses" in r.stderr
        assert base.exists()
    finally:
        holder.kill()
        holder.wait()
    Path(labenv["LAB_RUN"]).mkdir()
    r = run(["bash", str(LAB_SH), "clean"], labenv)
    assert r.returncode == 0, r.stderr
    assert not cache.exists() and not Path(labenv["LAB_RUN"]).exists()
