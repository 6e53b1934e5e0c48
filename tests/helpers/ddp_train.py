"""Launched by accelerate with 2 CPU processes: train one PEM on the tiny model, save this rank's adapter."""

import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from revrel.config import PemConfig  # noqa: E402
from revrel.models.loading import load_model  # noqa: E402
from revrel.release.pem import distributed, train_pem  # noqa: E402

from tiny import CORPUS  # noqa: E402

model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
loaded = load_model(str(model_dir))
rows = [{"instruction": "say something", "response": t} for t in CORPUS[:16]]
pm, log = train_pem(loaded.model, loaded.tokenizer, rows, PemConfig(rank=2, epochs=2, batch_size=2, lr=1e-2), seed=0)
acc = distributed()
assert acc is not None and acc.num_processes == 2, "expected 2 processes"
state = {n: p.detach().contiguous().clone() for n, p in pm.named_parameters() if "lora_" in n}
save_file(state, str(out / f"rank{acc.process_index}.safetensors"))
print(f"rank {acc.process_index}: {log.steps} steps, loss {log.loss[0]:.3f} -> {log.loss[-1]:.3f}", flush=True)
