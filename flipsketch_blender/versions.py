"""The Blender versions FlipSketch is tested on and supports (the manifest and
README say the same; CI runs the Blender tests on each tested version)."""

TESTED = ((4, 5), (5, 3))
SUPPORTED = ((4, 5), (5, 0), (5, 2), (5, 3))
LTS = ((4, 5), (5, 2))


def name(version: tuple[int, int]) -> str:
    """(4, 5) -> "4.5 LTS", (5, 3) -> "5.3"."""
    return f"{version[0]}.{version[1]}" + (" LTS" if version in LTS else "")


def summary() -> str:
    """Tested and supported versions, in words."""
    return (
        f"tested on Blender {' and '.join(name(v) for v in TESTED)}; supported: {', '.join(name(v) for v in SUPPORTED)}"
    )


def support(version: tuple[int, ...]) -> str:
    """How this Blender `version` (bpy.app.version) stands: "tested",
    "supported" (not run in CI) or "not supported"."""
    major_minor = (version[0], version[1])
    if major_minor in TESTED:
        return "tested"
    return "supported" if major_minor in SUPPORTED else "not supported"
