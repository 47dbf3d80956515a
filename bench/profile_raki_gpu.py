"""Where a RAKI reconstruction's time goes on a GPU: cProfile of the host side and the
torch profiler's kernel table, for one batch of 8 fastMRI-sized slices.

    python bench/profile_raki_gpu.py [raki|rraki] [R]
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from voxelhub.recon.phantom import PhantomSpec, simulate
from voxelhub.recon.raki import reconstruct_raki
from voxelhub.recon.rraki import reconstruct_rraki

method = sys.argv[1] if len(sys.argv) > 1 else "raki"
rate = int(sys.argv[2]) if len(sys.argv) > 2 else 4
function = reconstruct_rraki if method == "rraki" else reconstruct_raki
acq = simulate(PhantomSpec.fastmri(phase_encode=320, slices=8, acceleration=rate), seed=1)
function(acq.kspace, iterations=5)  # start-up
torch.cuda.synchronize()
started = time.perf_counter()
function(acq.kspace)
torch.cuda.synchronize()
print(f"{method} R={rate}: {(time.perf_counter() - started) / 8:.3f} s/slice, 8 slices")
deterministic = torch.use_deterministic_algorithms
torch.use_deterministic_algorithms = lambda *args, **kwargs: None  # type: ignore[assignment]
started = time.perf_counter()
function(acq.kspace)
torch.cuda.synchronize()
print(f"  without deterministic algorithms: {(time.perf_counter() - started) / 8:.3f} s/slice")
torch.use_deterministic_algorithms = deterministic
profiler = cProfile.Profile()
profiler.enable()
function(acq.kspace)
torch.cuda.synchronize()
profiler.disable()
pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as traced:
    function(acq.kspace)
    torch.cuda.synchronize()
table = traced.key_averages()
print(table.table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
print(table.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
