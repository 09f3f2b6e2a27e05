"""Fault injection on a tiny LEADING run (the harness: tests/fault_harness.py): SIGKILL inside a
step, a checkpoint write, an evaluation and the bank fill, each resumed to exactly the
uninterrupted run's weights, optimizer, bank, histories, RNG, metrics and best.pt; a full disk
(RLIMIT_FSIZE in the child) at a checkpoint write, a metrics line and an export: one line, the
previous file whole, resumed to the same end; and every bad input refused with one line naming
the file, nothing written. ``python benchmarks/faults.py`` runs more of the same for the figures
in docs/reliability.md."""

from fault_harness import KINDS, run_faults


def test_kills_full_disks_and_bad_inputs_lose_no_state(tmp_path):
    tally = run_faults(tmp_path, kills=len(KINDS), seed=0)
    assert tally.failures == [], "\n".join(tally.failures)
    assert tally.state_lost == [], "\n".join(tally.state_lost)
    assert [where for where, _ in tally.kills] == list(KINDS)
    assert tally.kills_injected == tally.kills_survived == len(KINDS)
    assert tally.disk_faults_injected == tally.disk_faults_survived == 3
    assert tally.bad_inputs_tried == tally.bad_inputs_refused == 17
