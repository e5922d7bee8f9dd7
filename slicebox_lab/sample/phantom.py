"""Synthetic bodies for the sample data: a CT chest, a CT abdomen and a T1 MR head, drawn slice by slice.

Why drawn and not downloaded: the node must be tried anywhere (a hospital network, Binder, CI) with
nothing fetched, and no real person may be in it.  Why anatomical: windows are how people read CT; a
lung window must show lungs with vessels, a bone window a spine and ribs, a soft-tissue or brain window
organs against fat and muscle.  So each tissue has its usual value (Hounsfield units for CT: air -1000,
lung -850, fat -100, muscle 50, liver/spleen ~105 in portal venous phase, contrast-filled vessels
150–300, cancellous bone 250, cortical bone 1000) on a geometry of the usual size in millimetres, and
the result is blurred a little (partial volume) and given scanner-like noise.

Coordinates are DICOM's patient coordinates (LPS) in mm with the origin at the centre of the field of
view: +x towards the patient's left (the right of the image), +y towards the back (down in the image).
Arrays are (z, y, x), z from the feet up.  Everything is deterministic (fixed seeds): made twice, the
same pixels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ct_chest", "ct_abdomen", "mr_head"]


class _Slice:
    """One axial slice being drawn: a value array and its x/y grids in mm."""

    def __init__(self, size: int, spacing: float, background: float) -> None:
        self.spacing = spacing
        self.half = (size - 1) / 2
        centres = (np.arange(size) - self.half) * spacing
        self.y, self.x = np.meshgrid(centres, centres, indexing="ij")
        self.values = np.full((size, size), background, dtype=np.float32)

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, angle: float = 0.0) -> np.ndarray:
        """Mask of an ellipse centred at (cx, cy) with semi-axes ax, ay (mm), turned by ``angle`` radians.

        Computed only inside its bounding box: a slice has a hundred small shapes (vessels, ribs)."""
        mask = np.zeros(self.values.shape, dtype=bool)
        reach = max(ax, ay) / self.spacing + 1
        row, col = cy / self.spacing + self.half, cx / self.spacing + self.half
        r0, r1 = max(int(row - reach), 0), min(int(row + reach) + 2, mask.shape[0])
        c0, c1 = max(int(col - reach), 0), min(int(col + reach) + 2, mask.shape[1])
        if r0 >= r1 or c0 >= c1:
            return mask
        dx, dy = self.x[r0:r1, c0:c1] - cx, self.y[r0:r1, c0:c1] - cy
        if angle:
            c, s = np.cos(angle), np.sin(angle)
            dx, dy = c * dx + s * dy, -s * dx + c * dy
        mask[r0:r1, c0:c1] = (dx / max(ax, 1e-3)) ** 2 + (dy / max(ay, 1e-3)) ** 2 <= 1.0
        return mask

    def paint(self, mask: np.ndarray, value: float) -> None:
        self.values[mask] = value


def _finish(volume: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """Partial volume (a 3×3 in-plane box blur) and Gaussian noise, as a scanner would add them."""
    padded = np.pad(volume, ((0, 0), (1, 1), (1, 1)), mode="edge")
    blurred = sum(padded[:, dy : dy + volume.shape[1], dx : dx + volume.shape[2]] for dy in range(3) for dx in range(3))
    rng = np.random.default_rng(seed)
    return np.asarray(blurred / 9.0 + rng.normal(0.0, noise, volume.shape), dtype=np.float32)


def _ribs(s: _Slice, ax: float, ay: float, t: float, count: int = 9) -> None:
    """Rib cross-sections around the chest wall: cortex and marrow, shifted with height (ribs slope down)."""
    for side in (-1, 1):
        for i in range(count):
            angle = np.pi * (0.12 + 0.8 * i / (count - 1)) + 0.25 * t
            px, py = side * ax * np.sin(angle), -ay * np.cos(angle)
            s.paint(s.ellipse(px, py, 6.5, 4.5, angle), 900.0)
            s.paint(s.ellipse(px, py, 3.8, 2.2, angle), 280.0)


def _spine(s: _Slice, cy: float, body: float = 18.0) -> None:
    """A vertebra: body (cortex and cancellous bone), pedicles and spinous process, the canal with the cord."""
    s.paint(s.ellipse(0, cy, body, body * 0.85), 800.0)
    s.paint(s.ellipse(0, cy, body - 2.5, body * 0.85 - 2.5), 230.0)
    s.paint(s.ellipse(0, cy + body + 9, 13, 10), 700.0)  # posterior arch
    s.paint(s.ellipse(0, cy + body + 26, 4, 12), 750.0)  # spinous process
    s.paint(s.ellipse(0, cy + body + 8, 8, 7), 8.0)  # canal (CSF)
    s.paint(s.ellipse(0, cy + body + 8, 4.5, 4), 35.0)  # cord


def ct_chest(slices: int = 40, size: int = 256, spacing: float = 1.5625, thickness: float = 5.0) -> np.ndarray:
    """A contrast-enhanced chest CT in HU (z, y, x): lungs with vessels and airways, heart, aorta, spine, ribs."""
    rng = np.random.default_rng(1956)
    # pulmonary vessels: tubes that drift slowly along z, thicker near the hilum
    vessels = [
        (side * rng.uniform(25, 95), rng.uniform(-55, 65), rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.25),
         rng.uniform(1.0, 3.8)) for side in (-1, 1) for _ in range(45)
    ]  # fmt: skip
    volume = np.empty((slices, size, size), dtype=np.float32)
    for k in range(slices):
        t = k / max(slices - 1, 1)  # 0: the diaphragm, 1: the lung apices
        z = (k - slices / 2) * thickness
        s = _Slice(size, spacing, -1000.0)
        ax, ay = 160.0 - 25 * t, 112.0 - 6 * t
        body = s.ellipse(0, 0, ax, ay)
        s.paint(body, 30.0)  # skin
        s.paint(s.ellipse(0, 0, ax - 2.5, ay - 2.5), -100.0)  # subcutaneous fat
        s.paint(s.ellipse(0, 2, ax - 14, ay - 12), 50.0)  # chest wall muscles
        if t > 0.45:  # scapulae behind the ribs, in the muscles of the back
            for side in (-1, 1):
                s.paint(s.ellipse(side * (ax - 50), ay - 30, 34, 4.5, side * 0.45) & s.ellipse(0, 2, ax - 16, ay - 14),
                        750.0)  # fmt: skip
        cav_x, cav_y = ax - 28, ay - 26
        s.paint(s.ellipse(0, 4, cav_x, cav_y), -90.0)  # mediastinal fat fills what the organs leave
        _ribs(s, cav_x + 3, cav_y + 3, t)
        lung_ax = (cav_x / 2 - 12) * (0.75 + 0.25 * np.sin(np.pi * min(1.0, 0.2 + t)))
        lung_ay = cav_y - 8
        for side in (-1, 1):
            s.paint(s.ellipse(side * (lung_ax + 22), 2, lung_ax, lung_ay, side * 0.12), -860.0)
        if t < 0.18:  # the liver dome under the right lung
            s.paint(s.ellipse(-45, 10, 75, 65 * (1 - t / 0.18) + 1), 60.0)
        for x0, y0, dx, dy, radius in vessels:
            px, py = x0 + dx * z, y0 + dy * z
            r = radius * (1.3 - min(abs(px), 95) / 120)
            inside = s.values[int(np.clip((py / spacing) + size / 2, 0, size - 1)),
                              int(np.clip((px / spacing) + size / 2, 0, size - 1))] < -700  # fmt: skip
            if inside:
                s.paint(s.ellipse(px, py, r, r) & (s.values < -700), 120.0)
        if t > 0.6:  # trachea; lower down the two main bronchi
            s.paint(s.ellipse(0, -20, 10, 9), 40.0)
            s.paint(s.ellipse(0, -20, 8, 7), -1000.0)
        elif t > 0.45:
            for side in (-1, 1):
                s.paint(s.ellipse(side * 18, -12, 6, 5), -1000.0)
        if t < 0.55:  # the heart: myocardium around contrast-filled chambers, lying to the left
            s.paint(s.ellipse(18, -28, 58 * (0.6 + t), 44 * (0.7 + 0.5 * t), -0.5), 45.0)
            s.paint(s.ellipse(4, -30, 24 * (0.6 + t), 20, -0.5), 240.0)
            s.paint(s.ellipse(34, -20, 20 * (0.6 + t), 17, -0.5), 260.0)
        elif t < 0.8:  # ascending aorta, pulmonary trunk, superior vena cava
            s.paint(s.ellipse(6, -32, 15, 15), 290.0)
            s.paint(s.ellipse(30, -28, 13, 13), 230.0)
            s.paint(s.ellipse(-24, -26, 10, 10), 180.0)
        elif t < 0.86:  # the aortic arch
            s.paint(s.ellipse(14, -5, 34, 11, 0.9), 290.0)
        s.paint(s.ellipse(22, 52, 12, 12), 290.0)  # descending aorta, left of the spine
        s.paint(s.ellipse(6, 36, 6, 5), 40.0)  # oesophagus
        s.paint(s.ellipse(6, 36, 2, 2), -1000.0)
        if t > 0.1:  # sternum
            s.paint(s.ellipse(0, -ay + 20, 16, 6), 600.0)
            s.paint(s.ellipse(0, -ay + 20, 12, 3.5), 250.0)
        _spine(s, 74.0)
        volume[k] = s.values
    return _finish(volume, 12.0, 1201)


def ct_abdomen(slices: int = 40, size: int = 256, spacing: float = 1.5625, thickness: float = 5.0) -> np.ndarray:
    """A portal venous abdomen CT in HU (z, y, x): liver, spleen, kidneys, stomach, bowel, vessels, spine."""
    rng = np.random.default_rng(1948)
    loops = [(rng.uniform(-70, 70), rng.uniform(-80, 10), rng.uniform(8, 15), rng.random() < 0.3) for _ in range(14)]
    volume = np.empty((slices, size, size), dtype=np.float32)
    for k in range(slices):
        t = k / max(slices - 1, 1)  # 0: the pelvic brim, 1: the dome of the liver
        s = _Slice(size, spacing, -1000.0)
        ax, ay = 168.0, 124.0
        s.paint(s.ellipse(0, 0, ax, ay), 30.0)
        s.paint(s.ellipse(0, 0, ax - 2.5, ay - 2.5), -105.0)  # subcutaneous fat
        s.paint(s.ellipse(0, 4, ax - 24, ay - 24), 50.0)  # abdominal wall muscles
        s.paint(s.ellipse(0, 4, ax - 34, ay - 34), -90.0)  # intra-abdominal fat
        for side in (-1, 1):
            s.paint(s.ellipse(side * 34, 92, 30, 22), 52.0)  # paraspinal muscles
        if t > 0.55:  # lower ribs around the upper abdomen
            _ribs(s, ax - 26, ay - 26, t, count=7)
        if t > 0.3:  # the liver, largest near the top
            grow = min(1.0, (t - 0.3) / 0.4)
            s.paint(s.ellipse(-58, 0, 50 + 35 * grow, 40 + 45 * grow, -0.3), 105.0)
            for i in range(6):  # hepatic and portal veins
                angle = i * np.pi / 3 + t
                s.paint(s.ellipse(-58 + 28 * grow * np.cos(angle), 28 * grow * np.sin(angle), 4, 4), 165.0)
        if 0.35 < t < 0.55:  # gallbladder
            s.paint(s.ellipse(-45, -48, 13, 17), 12.0)
        if t > 0.5:  # spleen and stomach (gas above fluid)
            s.paint(s.ellipse(88, 38, 28, 44, 0.4), 110.0)
            stomach = s.ellipse(52, -38, 42, 30, -0.3)
            s.paint(stomach, 60.0)
            s.paint(s.ellipse(52, -38, 37, 25, -0.3), 15.0)
            s.paint(s.ellipse(52, -38, 37, 25, -0.3) & (s.y < -52), -1000.0)
        if 0.35 < t < 0.6:  # pancreas
            s.paint(s.ellipse(10, 8, 48, 9, 0.35), 95.0)
        if 0.12 < t < 0.62:  # kidneys: cortex, medulla, sinus fat
            for side in (-1, 1):
                s.paint(s.ellipse(side * 70, 48, 26, 34, side * 0.5), 185.0)
                s.paint(s.ellipse(side * 70, 48, 18, 25, side * 0.5), 125.0)
                s.paint(s.ellipse(side * 62, 44, 7, 10, side * 0.5), -60.0)
        if t < 0.5:  # bowel loops, some with gas
            for x0, y0, radius, gas in loops:
                s.paint(s.ellipse(x0, y0, radius, radius * 0.8), 45.0)
                s.paint(s.ellipse(x0, y0, radius - 2.5, radius * 0.8 - 2.5), -1000.0 if gas else 20.0)
            for side in (-1, 1):  # psoas muscles
                s.paint(s.ellipse(side * 38, 55, 16 + 10 * (0.5 - t), 18), 48.0)
        if t < 0.12:  # iliac wings
            for side in (-1, 1):
                s.paint(s.ellipse(side * 105, 55, 40, 9, side * 0.9), 900.0)
                s.paint(s.ellipse(side * 105, 55, 34, 5, side * 0.9), 260.0)
        s.paint(s.ellipse(14, 30, 11, 11), 175.0)  # aorta
        s.paint(s.ellipse(-22, 30, 13, 11), 150.0)  # inferior vena cava
        _spine(s, 52.0, body=21.0)
        volume[k] = s.values
    return _finish(volume, 12.0, 1102)


def mr_head(slices: int = 20, size: int = 256, spacing: float = 0.9375, thickness: float = 5.0) -> np.ndarray:
    """A T1-weighted head MR (arbitrary units, z, y, x): scalp fat, skull, cortex, white matter, ventricles, eyes."""
    volume = np.empty((slices, size, size), dtype=np.float32)
    for k in range(slices):
        t = k / max(slices - 1, 1)  # 0: the skull base, 1: near the vertex
        scale = float(np.sqrt(max(0.08, 1 - ((t - 0.35) / 0.8) ** 2)))
        s = _Slice(size, spacing, 0.0)
        ax, ay = 74 * scale, 94 * scale
        s.paint(s.ellipse(0, 0, ax, ay), 1350.0)  # scalp fat: bright on T1
        s.paint(s.ellipse(0, 0, ax - 5, ay - 5), 90.0)  # outer table
        s.paint(s.ellipse(0, 0, ax - 7, ay - 7), 850.0)  # diploe (marrow)
        s.paint(s.ellipse(0, 0, ax - 9, ay - 9), 90.0)  # inner table
        s.paint(s.ellipse(0, 0, ax - 11, ay - 11), 260.0)  # CSF over the brain
        # cortex: a ribbon whose edge folds (gyri), white matter inside
        angle = np.arctan2(s.y, s.x)
        radius = np.hypot(s.x / max(ax - 12, 1), s.y / max(ay - 12, 1))
        folds = 1 - 0.045 * (1 + np.sin(14 * angle + 3 * t))
        s.paint(radius <= folds, 620.0)
        s.paint(radius <= folds - 0.12 - 0.03 * np.sin(9 * angle), 880.0)
        s.paint((np.abs(s.x) < 1.2) & (radius < 1.0) & (s.y < 0.55 * ay), 260.0)  # falx, front half
        if 0.3 < t < 0.75:  # lateral ventricles and deep grey nuclei
            for side in (-1, 1):
                s.paint(s.ellipse(side * 24, 4, 9, 14), 650.0)
                s.paint(s.ellipse(side * 10, -2, 5 + 2 * t, 26, side * 0.15), 240.0)
        if t < 0.25:  # orbits: fat, globes with dark vitreous and a lens; cerebellum behind
            for side in (-1, 1):
                s.paint(s.ellipse(side * 30, -ay + 18, 18, 17), 1250.0)
                s.paint(s.ellipse(side * 30, -ay + 14, 12, 12), 180.0)
                s.paint(s.ellipse(side * 30, -ay + 3, 4, 2), 900.0)
            s.paint(s.ellipse(0, ay * 0.55, ax * 0.6, ay * 0.3), 700.0)
        volume[k] = s.values
    # MR noise is Rician: the magnitude of a complex Gaussian, so the air is dark but not zero
    rng = np.random.default_rng(2024)
    real = volume + rng.normal(0, 18.0, volume.shape)
    imag = rng.normal(0, 18.0, volume.shape)
    return _finish(np.hypot(real, imag).astype(np.float32), 0.0, 7)
