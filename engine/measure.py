"""A measurement record per generation (denoiser passes, seconds, peak memory), and the one PSNR
of the lab (evaluation, calibration, bench, sweep) for how close two images are."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch


@dataclass
class Measurement:
    nfe: int = 0  # denoiser passes per image (two per step under CFG, one without)
    seconds: float = 0.0  # wall time of the whole generation (prompt encoding to decoded image)
    peak_mem_mb: float = 0.0  # CUDA: peak allocated; CPU: peak resident set size of the process
    skipped: int = 0  # denoiser passes per image replaced by a cache

    def to_json(self) -> dict:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 4)
        d["peak_mem_mb"] = round(self.peak_mem_mb, 1)
        return d


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _reset_cpu_peak() -> bool:
    # Writing 5 to clear_refs resets the kernel's high-water mark of resident memory (Linux).
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _cpu_peak_mb() -> float:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def measuring(device: torch.device, record: Measurement):
    """Time the block and record its peak memory on `device` into `record`."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_cpu_peak()
    start = time.perf_counter()
    try:
        yield record
    finally:
        if cuda:
            torch.cuda.synchronize(device)
            record.peak_mem_mb = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            record.peak_mem_mb = _cpu_peak_mb()
        record.seconds = time.perf_counter() - start


PSNR_CAP = 100.0  # dB reported for identical images (the bench table's convention)


def psnr_per_image(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per image PSNR in dB of uint8 images (B, H, W, 3) against the reference at the same seed, as
    a tensor; identical images give PSNR_CAP. The one PSNR of the lab (evaluation, calibration, bench)."""
    if images.shape != reference.shape:
        raise ValueError(f"psnr: images {tuple(images.shape)} and reference {tuple(reference.shape)} differ in shape")
    mse = ((images.double() - reference.double()) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(255.0**2 / mse.clamp_min(1e-30))).clamp(max=PSNR_CAP)


def difference_image(images: torch.Tensor, reference: torch.Tensor, gain: float = 4.0) -> torch.Tensor:
    """|images - reference| of uint8 images (B, H, W, 3) per pixel and channel, times `gain` and clipped
    to uint8, so that differences of a few levels, which PSNR counts, can be seen."""
    if images.shape != reference.shape:
        raise ValueError(f"difference: images {tuple(images.shape)} and reference {tuple(reference.shape)} "
                         "differ in shape")
    return ((images.float() - reference.float()).abs() * gain).clamp(0, 255).to(torch.uint8)


def steady_threads(device: torch.device) -> int:
    """One torch thread on the CPU unless OMP_NUM_THREADS asks otherwise: several threads on a CPU
    that other work shares spin against it and time unsteadily (bench --threads 1); a GPU is left
    as it is. Returns the CPU threads torch uses."""
    if device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)
    return torch.get_num_threads()
