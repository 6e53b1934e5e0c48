"""Load models and generate from them."""

from revrel.models.generation import Generation, GenerationConfig, generate, sequence_logprobs
from revrel.models.loading import DEFAULT_MODEL, LoadedModel, load_model, save_model

__all__ = ["DEFAULT_MODEL", "Generation", "GenerationConfig", "LoadedModel", "generate", "load_model", "save_model", "sequence_logprobs"]
