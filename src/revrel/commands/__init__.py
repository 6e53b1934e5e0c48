"""Commands above the pipeline: attacks on an unlearned model, the method bench, reports."""
