"""The square frame the backend animates, as seen through a camera or a view.

The model works on square images; a camera frame of any aspect is letterboxed
into that square (never squashed). A Frame maps world points to square-frame
coordinates (x right, y down, 0..1 edge to edge: the stroke schema) and back
onto a plane, so imported strokes land exactly where the drawing was.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """World -> clip matrix plus the aspect of the frame it covers."""

    matrix: np.ndarray  # 4x4 world -> clip space
    aspect: float  # frame width / height

    @property
    def extent(self) -> tuple[float, float]:
        """Width and height of the frame inside the unit square."""
        longest = max(self.aspect, 1.0)
        return self.aspect / longest, 1.0 / longest

    def to_square(self, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3) world points -> (N, 2) square coordinates and (N,) clip w (depth)."""
        clip = world @ self.matrix[[0, 1, 3], :3].T + self.matrix[[0, 1, 3], 3]
        fw, fh = self.extent
        xy = clip[:, :2] / clip[:, 2:3] * [fw / 2, -fh / 2] + 0.5
        return xy, clip[:, 2]

    def in_clip_range(self, world: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N,) bool: in front of the viewer and between
        its clip start and end (clip z within -w..w), where Blender draws."""
        clip = world @ self.matrix[2:, :3].T + self.matrix[2:, 3]
        return (clip[:, 1] > 0) & (np.abs(clip[:, 0]) <= clip[:, 1])

    def rays(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Square coordinates -> world ray origins and unit directions."""
        fw, fh = self.extent
        ndc = np.c_[(xy[:, 0] - 0.5) * 2 / fw, (0.5 - xy[:, 1]) * 2 / fh]
        inverse = np.linalg.inv(self.matrix)
        near = np.c_[ndc, np.full(len(ndc), -0.5), np.ones(len(ndc))] @ inverse.T
        far = np.c_[ndc, np.full(len(ndc), 0.5), np.ones(len(ndc))] @ inverse.T
        near, far = near[:, :3] / near[:, 3:4], far[:, :3] / far[:, 3:4]
        direction = far - near
        return near, direction / np.linalg.norm(direction, axis=1, keepdims=True)

    def view_direction(self) -> np.ndarray:
        """The world direction of the ray through the square's centre."""
        _, direction = self.rays(np.array([[0.5, 0.5]]))
        return direction[0]

    def image_plane_normal(self) -> np.ndarray:
        """Unit world normal of the planes parallel to the image, pointing away
        from the viewer: the planes of equal clip depth. Unlike the centre ray
        (`view_direction`), it stays the camera's axis under lens shift."""
        normal = self.matrix[2, :3]
        return normal / np.linalg.norm(normal)

    def square_card(self, point: np.ndarray) -> np.ndarray:
        """(4, 4) world matrix of the square frame on the image-parallel plane
        through `point`: columns x and y span the square's full width and
        height (x right, y up), z is the unit normal towards the viewer, and
        the translation is the square's centre."""
        normal = self.image_plane_normal()
        centre, left, right, top, bottom = self.on_plane(
            np.array([[0.5, 0.5], [0.0, 0.5], [1.0, 0.5], [0.5, 0.0], [0.5, 1.0]]), point, normal
        )
        card = np.eye(4)
        card[:3, 0], card[:3, 1], card[:3, 2], card[:3, 3] = right - left, top - bottom, -normal, centre
        return card

    def on_plane(self, xy: np.ndarray, point: np.ndarray, normal: np.ndarray) -> np.ndarray:
        """Square coordinates -> world points on the plane (point, normal)."""
        origins, directions = self.rays(xy)
        t = ((point - origins) @ normal) / (directions @ normal)
        return origins + directions * t[:, None]


def camera_frame(scene, depsgraph) -> Frame:
    """The scene camera's frame, render resolution and pixel aspect included."""
    camera, render = scene.camera, scene.render
    projection = camera.calc_matrix_camera(
        depsgraph,
        x=render.resolution_x,
        y=render.resolution_y,
        scale_x=render.pixel_aspect_x,
        scale_y=render.pixel_aspect_y,
    )
    matrix = np.array(projection @ camera.matrix_world.inverted())
    aspect = (render.resolution_x * render.pixel_aspect_x) / (render.resolution_y * render.pixel_aspect_y)
    return Frame(matrix, aspect)


def view_frame(region_data, width: int, height: int) -> Frame:
    """The current 3D view's frame (used when the scene has no camera)."""
    return Frame(np.array(region_data.perspective_matrix), width / height)
