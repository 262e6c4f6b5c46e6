"""`accelerated` on a model that every request of the process shares (engine/registry.py caches it):
a request with FP8 or a cache never changes what a concurrent request without them computes."""

import threading
import time

import torch

from engine import registry
from engine.accel.calibrate import VERSION
from engine.accel.runtime import accelerated
from engine.sampling import sample
from engine.store import Store

PROMPTS = ["a red star on the left", "a happy face on a blue background"]


def plain(family):
    return sample(family, PROMPTS, steps=6, guidance=3.0, seeds=[0, 1], height=32, width=32)[0]


def test_fp8_and_a_cache_in_one_thread_leave_another_threads_images_alone(tiny_model_dir, tmp_path):
    family = registry.load(str(tiny_model_dir), device="cpu")
    assert registry.load(str(tiny_model_dir), device="cpu") is family  # one object, shared
    store = Store(tmp_path)
    store.save_calibration(family.identity(), "teacache", {"method": "teacache", "version": VERSION,
                                                           "coefficients": [1.0, 0.0], "threshold": 0.3})
    alone = plain(family)
    with accelerated(family, "teacache", "weights", steps=16, store=store):
        fast = sample(family, PROMPTS, steps=16, guidance=3.0, seeds=[0, 1], height=32, width=32)[0]
    assert not torch.equal(fast, sample(family, PROMPTS, steps=16, guidance=3.0, seeds=[0, 1], height=32, width=32)[0])

    done, seen = threading.Event(), []

    def accelerated_requests():
        for _ in range(4):
            with accelerated(family, "teacache", "weights", steps=16, store=store):
                sample(family, PROMPTS, steps=16, guidance=3.0, seeds=[0, 1], height=32, width=32)
            time.sleep(0.05)  # requests arrive one after another, leaving the other thread its turns
        done.set()

    other = threading.Thread(target=accelerated_requests)
    other.start()
    while not done.is_set():  # plain requests, interleaved with the accelerated ones
        seen.append(plain(family))
    other.join()
    assert len(seen) >= 2  # they did run while the other thread's requests were under way
    assert all(torch.equal(images, alone) for images in seen)
    assert torch.equal(plain(family), alone)  # and the model is as it was


def test_a_model_retrained_in_place_is_not_taken_for_its_old_self(tiny_model_dir, tmp_path):
    """Cached images and cache calibrations are stored under the model's identity: its directory and
    when its files last changed."""
    import os
    import shutil

    from engine.families.embedded import EmbeddedFamily

    copy = shutil.copytree(tiny_model_dir, tmp_path / "m")
    family = EmbeddedFamily.load(copy)
    before = family.identity()
    assert before.startswith(str(copy.resolve()) + "@") and family.identity() == before
    weights = next(copy.rglob("*.safetensors"))
    os.utime(weights, (weights.stat().st_atime, weights.stat().st_mtime + 60))  # written again, later
    assert family.identity() != before
