"""Tests that boot the lab pair (QEMU TCG). Opt-in: IPSEC_LAB=1, as root, ~2-3 min with a built
image (the first run also builds it, ~1-4 min). They use a private LAB_RUN and free ports, so a
lab a developer keeps running in lab/run is left alone; the image cache (lab/cache) is shared.

    IPSEC_LAB=1 .venv/bin/python -m pytest -q tests/lab/test_lab_vms.py
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB_SH = REPO / "lab" / "lab.sh"
SMOKE_SH = REPO / "lab" / "smoke.sh"

pytestmark = [
    pytest.mark.skipif(os.environ.get("IPSEC_LAB") != "1", reason="boots VMs: set IPSEC_LAB=1 to run"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
]


def free_ports(n):
    socks = [socket.socket() for dummy in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def env(tmp_path):
    p1, p2, link = free_ports(3)
    e = dict(os.environ)
    e.update(LAB_RUN=str(tmp_path / "run"), LAB_SSH_PORT1=str(p1), LAB_SSH_PORT2=str(p2), LAB_LINK_PORT=str(link))
    yield e
    subprocess.run(["bash", str(LAB_SH), "down"], env=e, stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
                   check=False)


def lab(env, *args, timeout=900):
    return subprocess.run(["bash", str(LAB_SH), *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_smoke_passes_and_leaves_no_vm_behind(env):
    r = subprocess.run(["bash", str(SMOKE_SH)], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=1200, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "smoke: 6 passed, 0 failed" in r.stderr
    assert "lab1/out+5 lab1/in+5 lab2/out+5 lab2/in+5" in r.stderr
    # it booted the pair, so it stopped it again
    assert "lab1: not running" in lab(env, "status").stdout


def test_up_writes_inventory_and_ssh_config_then_reuses(env):
    r = lab(env, "up")
    assert r.returncode == 0, r.stderr
    run = Path(env["LAB_RUN"])
    inv = (run / "inventory.yml").read_text()
    for needle in ("lab1:", "lab2:", "ansible_host: 127.0.0.1", f"ansible_port: {env['LAB_SSH_PORT1']}",
                   f"ansible_port: {env['LAB_SSH_PORT2']}", "ansible_user: root",
                   f"ansible_ssh_private_key_file: {run}/id_ed25519",
                   "ansible_python_interpreter: /usr/bin/python3"):
        assert needle in inv
    assert (run / "id_ed25519").stat().st_mode & 0o077 == 0
    out = lab(env, "ssh", "2", "hostname; ip -br -4 addr show link0; ls /sys/class/net").stdout
    assert out.splitlines()[0] == "lab2"
    assert "192.168.100.2/24" in out
    assert {"mgmt0", "link0", "vf0", "vf0_rep"} <= set(out.split())
    r = lab(env, "up")
    assert r.returncode == 0 and "lab already up (reused)" in r.stderr


def test_poweroff_inside_then_up_restarts_the_pair(env):
    assert lab(env, "up").returncode == 0
    r = lab(env, "ssh", "2", "poweroff")
    assert r.returncode == 0, r.stderr
    deadline = time.time() + 60
    while time.time() < deadline and "lab2: not running" not in lab(env, "status").stdout:
        time.sleep(1)
    st = lab(env, "status")
    assert "lab2: not running" in st.stdout and st.returncode == 1
    r = lab(env, "up")
    assert r.returncode == 0, r.stderr
    assert "restarting the pair from scratch" in r.stderr
    assert lab(env, "ssh", "1", "ping -c 2 -W 3 192.168.100.2").returncode == 0


def test_ssh_timeout_is_reported_with_the_console_and_leaves_nothing_running(env):
    r = lab({**env, "LAB_SSH_TIMEOUT": "1"}, "up")
    assert r.returncode != 0
    assert "SSH not up within 1s" in r.stderr
    assert "lab1 console" in r.stderr
    st = lab(env, "status").stdout
    assert "lab1: not running" in st and "lab2: not running" in st


def test_a_vm_dying_during_boot_is_reported(env):
    proc = subprocess.Popen(["bash", str(LAB_SH), "up"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pidfile = Path(env["LAB_RUN"]) / "vm2.pid"
    deadline = time.time() + 600  # includes a first image build
    while time.time() < deadline:  # lab2 has started once its SSH forward listens
        if pidfile.exists() and pidfile.read_text().strip():
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", int(env["LAB_SSH_PORT2"]))) == 0:
                    break
        time.sleep(0.2)
    time.sleep(1)  # let lab.sh get from "started" to waiting for SSH
    os.kill(int(pidfile.read_text()), signal.SIGTERM)
    dummy, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "lab2 died while booting" in err
    assert "terminating on signal 15" in err  # QEMU's own stderr is shown
