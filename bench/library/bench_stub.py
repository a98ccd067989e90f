# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark only (bench/play.yml, ANSIBLE_LIBRARY=bench/library; not part of the collection): takes
the xfrm modules' arguments and does nothing with them, so an ansible-playbook run of it measures
what Ansible itself spends to hand a list of N objects to a module (controller variables and
templating, argument encoding, SSH transfer, Python start and argument decoding on the host)."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(config=dict(type="list", elements="dict"), state=dict(type="str"),
                                              namespace=dict(type="str"), output=dict(type="str")),
                           supports_check_mode=True)
    config = module.params["config"] or []
    module.exit_json(changed=False, objects=len(config), invocation={"module_args": {"config": "<%d objects>" % len(config)}})


if __name__ == "__main__":
    main()
