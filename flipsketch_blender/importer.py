"""Results -> Blender: an image sequence over the drawing and editable GP keyframes.

Only new data is created (a layer per variant, an image empty, a text block
with the job's metadata); existing layers and objects are never touched.
"""

import json
import os
import shutil
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from .bundled import client_library
from .export import GENERATED_PREFIX, STROKES_CHOOSE, Placement, line_alpha, line_scale, material_alphas, mirrored
from .gpencil import write_strokes

INK_MATERIAL = "FlipSketch Ink"


def hold_sequence(folder: Path, timing: int, first_number: int = 1) -> Path:
    """frame_*.png -> `folder`/sequence/seq_NNNN.png from `first_number`, each
    frame held `timing` scene frames (image sequences play one file per scene
    frame); the first file. An extension or a regenerated segment numbers its
    files as they go into its parent's sequence (`publish_sequence`)."""
    sequence = folder / "sequence"
    sequence.mkdir(exist_ok=True)
    number = first_number
    for frame in sorted(folder.glob("frame_*.png")):
        for _ in range(timing):
            shutil.copyfile(frame, sequence / f"seq_{number:04d}.png")
            number += 1
    return sequence / f"seq_{first_number:04d}.png"


def publish_sequence(variant: dict, sequence: Path) -> None:
    """Move a variant's held files into the clip's `sequence` folder (main
    thread, once its keyframes are in): files of the same numbers, the
    segment's old frames, are replaced; until then the clip is untouched.
    Raises FileNotFoundError when the folder is gone."""
    if not sequence.is_dir():
        raise FileNotFoundError(f"the clip's image folder {sequence} is gone")
    for file in sorted(Path(variant["first"]).parent.glob("seq_*.png")):
        shutil.move(file, sequence / file.name)


def blend_relative(path: str, blend: str = "") -> str:
    """`path` as '//…', relative to the .blend at `blend` (default: the saved
    file's), so that the .blend and its results can move together; as it is
    when the file is not saved yet or the path is on another drive."""
    blend = blend or bpy.data.filepath
    if not blend:
        return path
    try:
        return bpy.path.relpath(path, start=os.path.dirname(blend))
    except ValueError:  # another drive (Windows): no relative path exists
        return path


def _card(placement: Placement) -> np.ndarray:
    """The square frame on the drawing's depth, facing the camera as it was
    when the job was sent (see Frame.square_card)."""
    return placement.frame().square_card(np.array(placement.point))


def add_image_sequence(
    name: str, first_file: Path, count: int, start: int, placement: Placement, scene
) -> bpy.types.Object:
    """An image empty in `scene` playing the sequence from scene frame `start`
    for `count` frames, covering the square frame exactly as the camera saw it
    at job time (lens shift, orthographic, any aspect), at the drawing's depth."""
    image = bpy.data.images.load(str(first_file), check_existing=False)
    image.source = "SEQUENCE"
    image.name = name
    image.filepath = blend_relative(image.filepath)
    empty = bpy.data.objects.new(name, None)
    empty.empty_display_type = "IMAGE"
    empty.data = image  # pyright: ignore[reportAttributeAccessIssue]  an image empty's data is its image
    card = _card(placement)
    width = float(np.linalg.norm(card[:3, 0]))
    card[:3, 0] /= width
    card[:3, 1] /= width  # the image is drawn width x width: a y scale of height / width stretches it
    empty.matrix_world = Matrix(card.tolist())
    empty.empty_display_size = width
    empty.use_empty_image_alpha = True
    empty.color[3] = 0.8  # pyright: ignore[reportIndexIssue]  the stubs' bpy_prop_array lacks item access
    user = empty.image_user
    user.frame_start, user.frame_duration, user.frame_offset = start, count, 0
    user.use_auto_refresh, user.use_cyclic = True, False
    scene.collection.objects.link(empty)
    return empty


def _ink_material(ob) -> int:
    """The slot of a material that draws the imported lines (export's
    material_alphas: visible, an opaque-enough colour, and before Blender 5.1
    its Stroke switch on): the first such slot, else a 'FlipSketch Ink'
    material added to `ob`. An object without materials draws with Blender's
    default stroke material: slot 0, nothing added."""
    if not ob.material_slots:
        return 0
    lines, _ = material_alphas(ob)
    if (lines > 0).any():
        return int(np.argmax(lines > 0))
    material = bpy.data.materials.get(INK_MATERIAL)
    style = material.grease_pencil if material is not None else None
    if style is None or line_alpha(style) == 0:
        material = bpy.data.materials.new(INK_MATERIAL)
        bpy.data.materials.create_gpencil_data(material)
        if not STROKES_CHOOSE:  # from 5.1 each stroke shows its line; the switch is deprecated
            material.grease_pencil.show_stroke = True
    ob.data.materials.append(material)
    return len(ob.material_slots) - 1


def write_traced(ob, layer, traced: dict, first_frame: int, timing: int, placement: Placement) -> None:
    """Traced strokes -> keyframes on `layer` from `first_frame`, on the drawing's plane."""
    frame, point, normal = placement.frame(), np.array(placement.point), np.array(placement.normal)
    object_matrix = placement.object_to_world(ob)
    to_local = np.linalg.inv(object_matrix @ np.array(layer.matrix_local))
    side = float(np.linalg.norm(_card(placement)[:3, 0]))
    scale = 1.0 / line_scale(object_matrix)  # the radius that Blender draws as the traced width
    material = _ink_material(ob)
    for k, drawing in enumerate(traced["frames"]):
        strokes = drawing["strokes"]
        if not strokes:
            write_strokes(layer, first_frame + k * timing, [], [], material)
            continue
        lengths = np.cumsum([len(stroke["points"]) for stroke in strokes])[:-1]
        xy = np.concatenate([np.asarray(stroke["points"], dtype=np.float64) for stroke in strokes])
        world = frame.on_plane(mirrored(xy, placement.flip), point, normal)  # the object's Flip effects undone
        local = (np.c_[world, np.ones(len(world))] @ to_local.T)[:, :3]
        radius = np.concatenate([np.asarray(stroke["radius"], dtype=np.float64) for stroke in strokes]) * side * scale
        cyclic = [stroke.get("cyclic") is True for stroke in strokes]  # traced loops (absent before version 2)
        write_strokes(
            layer, first_frame + k * timing, np.split(local, lengths), np.split(radius, lengths), material, cyclic
        )


def add_traced_layer(ob, name: str, traced: dict, start: int, timing: int, placement: Placement):
    """A new layer holding the traced clip from frame `start`."""
    layer = ob.data.layers.new(name, set_active=False)
    write_traced(ob, layer, traced, start, timing, placement)
    return layer


def prepare_results(results: Path, timing: int, append_to: tuple[str, int] | None = None) -> dict:
    """File work for an import, done in the job's thread (no bpy): read the
    run record and traced strokes, and lay out the held image sequences.
    `append_to` = (parent sequence folder, first file number) for an
    extension or a regenerated segment: its files are numbered to go there
    (publish_sequence, at import).
    Variants come best first with their "score" and "hidden" (below the job's
    min_score), as the run record ranks them; a record without a ranking
    (an older backend) gives them in seed order, unranked (score -1).
    A run.json naming a folder outside `results` raises the client's error."""
    record = json.loads((results / "run.json").read_text(encoding="utf-8"))
    unranked = [{"seed": seed, "folder": sub} for sub, seed in zip(record["files"], record["seeds"], strict=True)]
    variants = []
    for entry in record.get("variants") or unranked:
        folder = results if entry["folder"] == "." else client_library().inside(results, entry["folder"])
        traced = json.loads((folder / "strokes.json").read_text(encoding="utf-8"))
        number = append_to[1] if append_to else 1
        variants.append(
            {
                "seed": entry["seed"],
                "score": entry.get("score", -1.0),
                "hidden": entry.get("hidden", False),
                "folder": entry["folder"],
                "traced": traced,
                "first": str(hold_sequence(folder, timing, number)),
            }
        )
    return {"record": record, "variants": variants, "sequence": append_to[0] if append_to else None}


def _record_job(job, layers: list[str], placement: Placement, prepared: dict) -> None:
    text = bpy.data.texts.new(f"FlipSketch {job.key}.json")
    summary = {"job": job.key, "parent": job.parent_key or None, "layers": layers, "placement": placement.to_json()}
    text.write(json.dumps({**summary, "run": prepared["record"]}, indent=2))


def import_results(job, ob, prepared: dict) -> list[str]:
    """Bring the variants of `prepared` into the scene (main thread), the first
    visible and the others hidden; returns the new layer names."""
    placement = Placement(**json.loads(job.placement))
    variants = prepared["variants"]
    layers = []
    for index, variant in enumerate(variants):
        label = f"{GENERATED_PREFIX}{job.prompt[:40]}" + (f" (seed {variant['seed']})" if len(variants) > 1 else "")
        layer = add_traced_layer(ob, label, variant["traced"], job.frame, job.timing, placement)
        layer.hide = index > 0
        count = len(variant["traced"]["frames"]) * job.timing
        empty = add_image_sequence(label, Path(variant["first"]), count, job.frame, placement, job.id_data)
        empty.hide_viewport = index > 0
        if index == 0:
            job.sequence_object = empty.name
            job.first_key, job.key_count = job.frame, len(variant["traced"]["frames"])
        layers.append(layer.name)
    _record_job(job, layers, placement, prepared)
    return layers


def import_extension(job, ob, prepared: dict) -> list[str]:
    """Append an extension after its parent's last drawing on the same layer,
    and to the same image sequence (the join frame is not repeated). Empty
    keyframes where its drawings go (a storyboard clip's end) move after them,
    so the clip still ends empty; a drawing there is never overwritten
    (ValueError, before anything changes)."""
    placement = Placement(**json.loads(job.placement))
    traced = prepared["variants"][0]["traced"]
    layer = ob.data.layers[job.target_layer]
    first, count = job.frame + job.timing, len(traced["frames"])
    end = first + count * job.timing  # the frame after the extension's last drawing ends
    strokes = {frame.frame_number: len(frame.drawing.strokes) for frame in layer.frames}  # keyframe -> strokes
    in_the_way = [number for number in strokes if first <= number < end]
    drawn = [number for number in in_the_way if strokes[number]]
    if drawn:
        raise ValueError(
            f"the layer '{layer.name}' already has drawings at frames {drawn}, where the extension goes; "
            "move them and extend again"
        )
    for number in in_the_way:
        layer.frames.remove(number)
    job.first_key, job.key_count = first, count
    write_traced(ob, layer, traced, first, job.timing, placement)
    if in_the_way and end not in strokes:
        write_strokes(layer, end, [], [])  # the clip ends empty, as it did
    empty = bpy.data.objects.get(job.sequence_object)
    if empty is not None and prepared["sequence"]:
        publish_sequence(prepared["variants"][0], Path(prepared["sequence"]))
        empty.image_user.frame_duration += count * job.timing
    _record_job(job, [layer.name], placement, prepared)
    return [layer.name]


def replace_segment(job, old, ob, prepared: dict) -> list[str]:
    """A regenerated segment takes the place of `old` on the same layer (its
    keyframes) and in the same image sequence (its files, numbered for it by
    the job's thread, moved in once the keyframes are in); the other segments
    are not touched."""
    placement = Placement(**json.loads(job.placement))
    traced = prepared["variants"][0]["traced"]
    layer = ob.data.layers[job.target_layer]
    for k in range(old.key_count):
        if layer.get_frame_at(old.first_key + k * old.timing) is not None:
            layer.frames.remove(old.first_key + k * old.timing)
    job.first_key, job.key_count = old.first_key, len(traced["frames"])
    write_traced(ob, layer, traced, job.first_key, job.timing, placement)
    if prepared["sequence"]:
        publish_sequence(prepared["variants"][0], Path(prepared["sequence"]))
    old.state, old.message = "replaced", f"Replaced by job {job.key}."
    _record_job(job, [layer.name], placement, prepared)
    return [layer.name]
