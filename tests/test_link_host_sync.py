"""The link step reads nothing back from the device (the guard of test_host_sync.py: every
tensor that would live on the GPU is marked, and any host read of one fails)."""

import torch
from test_host_sync import device_run


def test_link_steps_read_nothing_back_from_the_device(tiny_bert, tmp_path, guard):
    tr = device_run(tiny_bert, tmp_path, guard, "train.task=link", "model.link_dim=8", "data.link_eval_negatives=5",
                    "train.link_negatives=2", "model.link_decoder=mlp")
    run = tr.run
    with guard:
        for step in range(2):
            run.step = step
            loss = tr.task.step(run, torch.arange(16 * step, 16 * (step + 1)), torch.arange(32 * step, 32 * (step + 1)))
            run.overlap.join()
            run.optim.step()
    assert guard.reads == [], "\n".join(guard.reads)
    # the guard did watch the step: the loss, the decoder and the histories are device tensors
    assert guard.is_device(loss) and guard.is_device(run.model.appnp.g_history)
    assert guard.is_device(next(run.model.decoder.parameters()))
