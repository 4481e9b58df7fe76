"""FlipSketch backend: turns a sketch and a motion prompt into a hand-drawn animation.

The heavy stack (torch, diffusers) is imported lazily by the modules that need it,
so `import flipsketch` stays cheap for the CLI's help and for the HTTP client.
"""

__version__ = "0.1.0"

# Version of the JSON formats crossing the Blender <-> backend boundary
# (stroke polylines in, run.json and traced strokes out).
SCHEMA_VERSION = 1

PUBLISHED_MODEL = "Hmrishav/t2v_sketch-lora"
PUBLISHED_SUBFOLDER = "checkpoint-2500"
MODEL_LICENCE = (
    "The published FlipSketch model is a fine-tune of ModelScope text-to-video 1.7B, "
    "licensed CC-BY-NC-4.0: non-commercial use only."
)
