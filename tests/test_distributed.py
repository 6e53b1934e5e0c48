"""Release training under `accelerate launch` with 2 CPU processes (gloo): both ranks end identical."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_gives_identical_adapters(tiny_dir, tmp_path):
    script = Path(__file__).parent / "helpers" / "ddp_train.py"
    accel = Path(sys.executable).with_name("accelerate")
    # --multi_gpu selects accelerate's torchrun launcher; with no CUDA, revrel asks accelerate for CPU DDP (gloo)
    cmd = [str(accel), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(_free_port()),
           "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(tiny_dir), str(tmp_path)]
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(float(v.abs().sum()) > 0 for k, v in a.items() if "lora_B" in k)  # it trained


def test_documented_accelerate_configs_load_in_accelerate():
    """The configs the README points to must at least parse as accelerate cluster configs."""
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    found = sorted((Path(__file__).parents[1] / "configs" / "accelerate").glob("*.yaml"))
    assert {p.stem for p in found} == {"ddp", "deepspeed_zero2", "fsdp"}
    kinds = {p.stem: str(load_config_from_file(str(p)).distributed_type) for p in found}
    assert kinds == {"ddp": "DistributedType.MULTI_GPU", "deepspeed_zero2": "DistributedType.DEEPSPEED", "fsdp": "DistributedType.FSDP"}
