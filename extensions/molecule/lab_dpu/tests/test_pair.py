"""The default scenario's mirror checks, on the real pair: A's outbound SA == B's inbound SA (addresses,
SPI, reqid, algorithm, key as an on-host hash), policies mirrored, one key per direction.
(The default scenario's wire/SA-counter traffic test is not used: with packet offload tcpdump on the
PF sees the cleartext the NIC encrypts; test_dpu_offload.py checks the NIC counters instead.)"""
from test_converged import (  # noqa: F401  pylint: disable=unused-import
    test_each_direction_has_its_own_key_and_spi,
    test_each_host_has_owned_sas_and_policies_both_ways,
    test_every_owned_policy_has_its_sa_on_the_host,
    test_out_policy_of_sender_equals_in_policy_of_receiver,
    test_sa_of_sender_equals_sa_of_receiver,
)
