"""The burnedInText policy with the real Tesseract: refuse, mask-detected, mask-detected-phi, keep.

No OCR result is mocked: the images carry real text and Tesseract reads it; "without Tesseract" makes
the binding unimportable, as on a node where it is not installed.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from generators import ct_dataset, ultrasound_with_burned_name
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from slicebox_lab.anonymization import PixelMask, Profile, PseudonymKeys, anonymize, ocr
from slicebox_lab.anonymization.pixeltext import decide, identifying_reason, mask_rectangle
from slicebox_lab.errors import AnonymizationRefused, InvalidInput

needs_ocr = pytest.mark.skipif(
    ocr.ocr_unavailable_reason() is not None, reason=f"OCR unavailable: {ocr.ocr_unavailable_reason()}"
)
KEYS = PseudonymKeys(b"burned-in-text-test-secret-01234")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CLEAN_PIXEL_DATA = "113101"


def annotated_ultrasound() -> tuple[Dataset, dict[str, tuple[int, int, int, int]]]:
    """A 480x640 ultrasound frame: the patient's name, ID and study date at the top, and annotations that
    identify nobody ("Depth 14 cm", "Gain 52 dB", "5 cm", "MI 0.9", a depth mark, "L"); with where each was
    drawn (x0, y0, x1, y1). The short ones are below what the detector reads as text (fewer than three
    letters and digits, or unsure): they stay under every policy."""
    ds = ultrasound_with_burned_name(PatientName="Holmberg^Freja", PatientID="19840312-4417", rows=480, columns=640)
    ds.StudyDate = "20240305"
    rng = np.random.default_rng(5)
    image = Image.fromarray(rng.integers(0, 50, size=(480, 640), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    placed = {}
    for key, position, text, size in (
        ("name", (12, 8), "HOLMBERG, FREJA", 18),
        ("id", (12, 34), "ID 19840312-4417", 16),
        ("date", (470, 8), "05.03.2024", 16),
        ("scale", (560, 200), "5 cm", 16),
        ("depthcm", (480, 300), "Depth 14 cm", 16),
        ("gain", (40, 420), "Gain 52 dB", 16),
        ("index", (540, 420), "MI 0.9", 16),
        ("depth", (600, 100), "10", 14),
        ("side", (300, 440), "L", 20),
    ):
        font = ImageFont.truetype(FONT, size)
        draw.text(position, text, fill=230, font=font)
        placed[key] = draw.textbbox(position, text, font=font)
    ds.PixelData = np.asarray(image).tobytes()
    return ds, placed


def _bright(pixels: np.ndarray, box: tuple[int, int, int, int]) -> int:
    x0, y0, x1, y1 = box
    return int(pixels[y0:y1, x0:x1].max())


def _corners(box: ocr.TextBox) -> tuple[int, int, int, int]:
    return box.x, box.y, box.x + box.width, box.y + box.height


def _codes(ds: Dataset) -> list[str]:
    return [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]


# ------------------------------------------------------------------------------------------- policies


@needs_ocr
def test_refuse_names_the_text_found_masked_and_the_settings_that_send_it():
    ds = ultrasound_with_burned_name()
    with pytest.raises(AnonymizationRefused) as refused:
        anonymize(ds, Profile(), KEYS)
    message = refused.value.message
    assert "text was found in its pixels" in message and "frame 1" in message
    assert "L******** M***" in message and "Lindqvist" not in message  # shown masked, never read out
    assert '"burnedInText": "mask-detected"' in message and '"mask-detected-phi"' in message
    assert "SliceboxApp.anonymization_pixel_masks" in message and '"burnedInAnnotation": "keep"' in message


@needs_ocr
def test_an_ultrasound_in_which_no_text_is_found_leaves_as_it_is():
    ds = ultrasound_with_burned_name()
    ds.PixelData = np.random.default_rng(1).integers(0, 60, size=(120, 320), dtype=np.uint8).tobytes()
    out = anonymize(ds, Profile(), KEYS)
    assert out.PixelData == ds.PixelData and "BurnedInAnnotation" not in out
    assert CLEAN_PIXEL_DATA not in _codes(out)


@needs_ocr
def test_a_flagged_image_is_refused_under_refuse_even_without_readable_text():
    ds = ultrasound_with_burned_name(BurnedInAnnotation="YES")
    ds.PixelData = np.random.default_rng(1).integers(0, 60, size=(120, 320), dtype=np.uint8).tobytes()
    with pytest.raises(AnonymizationRefused, match="BurnedInAnnotation is YES"):
        anonymize(ds, Profile(), KEYS)
    out = anonymize(ds, Profile(burned_in="mask-detected"), KEYS)  # nothing found, nothing masked: the flag stays
    assert out.PixelData == ds.PixelData and out.BurnedInAnnotation == "YES"


@needs_ocr
def test_mask_detected_blacks_out_all_text_and_records_it():
    ds, placed = annotated_ultrasound()
    before = ds.pixel_array.copy()
    original = ds.PixelData
    out = anonymize(ds, Profile.from_json({"burnedInText": "mask-detected"}), KEYS)
    after = out.pixel_array
    for key in ("name", "id", "date", "depthcm", "gain"):
        assert _bright(after, placed[key]) == 0, key
    decision = decide(ds, Profile(burned_in="mask-detected"))
    inside = np.zeros(after.shape, dtype=bool)
    for text in decision.texts:  # every text found is masked
        assert text.decision == "masked" and _bright(after, _corners(text.box)) == 0, text
    for r in decision.rectangles[1]:
        inside[r.y : r.y + r.height, r.x : r.x + r.width] = True
    assert out.BurnedInAnnotation == "NO"
    assert CLEAN_PIXEL_DATA in _codes(out) and "Clean Pixel Data Option" in str(out.DeidentificationMethod)
    changed = after != before
    assert changed.any() and not (changed & ~inside).any()  # the text's boxes, nothing else
    assert inside.mean() < 0.08
    assert ds.PixelData == original and "BurnedInAnnotation" not in ds  # the input is untouched


@needs_ocr
def test_mask_detected_phi_masks_the_name_id_and_date_and_keeps_what_identifies_nobody():
    ds, placed = annotated_ultrasound()
    before = ds.pixel_array.copy()
    out = anonymize(ds, Profile.from_json({"burnedInText": "mask-detected-phi"}), KEYS)
    after = out.pixel_array
    for key in ("name", "id", "date"):
        assert _bright(after, placed[key]) == 0, key
    for key in ("depthcm", "gain", "scale", "index", "depth", "side"):
        x0, y0, x1, y1 = placed[key]
        np.testing.assert_array_equal(after[y0:y1, x0:x1], before[y0:y1, x0:x1], err_msg=key)
    assert out.BurnedInAnnotation == "NO" and CLEAN_PIXEL_DATA in _codes(out)
    decision = decide(ds, Profile(burned_in="mask-detected-phi"))
    kept = {t.box.text for t in decision.texts if t.decision == "kept"}
    assert any("Depth" in text for text in kept) and any("Gain" in text for text in kept)
    masked = [t for t in decision.texts if t.decision == "masked"]
    assert {t.why for t in masked} >= {"a part of PatientName", "StudyDate"}
    assert [mask_rectangle(t.box) for t in masked] == list(decision.rectangles[1])


@needs_ocr
def test_keep_sends_the_pixels_unread():
    ds = ultrasound_with_burned_name()
    decision = decide(ds, Profile.from_json({"burnedInText": "keep"}))
    assert decision.detection == "not read" and decision.fate == "kept"
    assert anonymize(ds, Profile(burned_in="keep"), KEYS).PixelData == ds.PixelData


@needs_ocr
def test_configured_masks_apply_first_and_the_text_they_leave_is_read():
    ds, placed = annotated_ultrasound()
    top_bar = {"match": {"Modality": "US"}, "rectangles": [{"x": 0, "y": 0, "width": 640, "height": 60}]}
    profile = Profile.from_json({"pixelMasks": [top_bar]})
    with pytest.raises(AnonymizationRefused, match="text was found"):  # "Depth 14 cm" and "Gain 52 dB" are left
        anonymize(ds, profile, KEYS)
    phi = Profile.from_json({"pixelMasks": [top_bar], "burnedInText": "mask-detected-phi"})
    decision = decide(ds, phi)
    assert all(t.box.y >= 60 for t in decision.texts)  # nothing read under the mask
    out = anonymize(ds, phi, KEYS)
    assert not out.pixel_array[:60].any() and out.BurnedInAnnotation == "NO"


@needs_ocr
def test_every_image_is_read_when_the_node_scans_all():
    ds, _ = annotated_ultrasound()
    ds.Modality = "CT"
    assert decide(ds, Profile()).scanned is None
    with pytest.raises(AnonymizationRefused, match="SliceboxApp.burned_in_scan_all"):
        anonymize(ds, Profile(scan_all=True), KEYS)


def test_the_mask_of_a_box_is_padded():
    box = ocr.TextBox(1, 1, 30, 100, 20, "x", 90.0)
    rectangle = mask_rectangle(box)
    assert (rectangle.x, rectangle.y, rectangle.width, rectangle.height) == (0, 25, 111, 30)


# ------------------------------------------------------------------------------------------- without Tesseract


@pytest.fixture
def no_tesseract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tesserocr", None)


@pytest.mark.usefixtures("no_tesseract")
@pytest.mark.parametrize("policy", ["refuse", "mask-detected", "mask-detected-phi"])
def test_without_tesseract_a_node_configured_for_ocr_refuses_and_says_what_to_install(policy: str):
    ds = ultrasound_with_burned_name()
    ds.PixelData = np.zeros((120, 320), dtype=np.uint8).tobytes()  # even an image without text: it cannot know
    with pytest.raises(AnonymizationRefused) as refused:
        anonymize(ds, Profile(burned_in=policy), KEYS)
    message = refused.value.message
    assert "cannot be read" in message and "tesserocr" in message and "tesseract-ocr-eng" in message
    assert "SliceboxApp.burned_in_text_detection" in message and '"burnedInAnnotation": "keep"' in message
    assert decide(ds, Profile(burned_in=policy)).detection == "unavailable"


@pytest.mark.usefixtures("no_tesseract")
def test_without_tesseract_keep_a_configured_mask_and_detection_off_still_work():
    ds = ultrasound_with_burned_name()
    assert anonymize(ds, Profile(burned_in="keep"), KEYS).PixelData == ds.PixelData
    mask = PixelMask.from_json(
        {"match": {"Modality": "US"}, "rectangles": [{"x": 0, "y": 0, "width": 320, "height": 32}]}
    )
    out = anonymize(ds, Profile(pixel_masks=(mask,), detect_text=False), KEYS)
    assert not out.pixel_array[:32].any()
    # a configured mask still cleans it under refuse, as before text could be read; mask-detected needs reading
    out = anonymize(ds, Profile(pixel_masks=(mask,)), KEYS)
    assert not out.pixel_array[:32].any() and out.BurnedInAnnotation == "NO"
    with pytest.raises(AnonymizationRefused, match="cannot be read"):
        anonymize(ds, Profile(pixel_masks=(mask,), burned_in="mask-detected"), KEYS)
    with pytest.raises(AnonymizationRefused, match="text detection is off"):
        anonymize(ds, Profile(detect_text=False), KEYS)


def test_images_not_scanned_are_never_read(no_tesseract: None):
    ds = ct_dataset()
    assert anonymize(ds, Profile(), KEYS).PixelData == ds.PixelData


# ------------------------------------------------------------------------------------------- identifying text


@pytest.mark.parametrize(
    "text,why",
    [
        ("HOLMBERG, FREJA", "a part of PatientName"),
        ("Freja Holmbreg", "a part of PatientName"),  # one misread letter
        ("Holmberg*Freja", "a part of PatientName"),
        ("19840312-4417", "PatientID"),
        ("ID: 1984O312-4417", "a part of PatientID"),  # O for 0 in one piece: the other piece still matches
        ("Acc A7298652", "AccessionNumber"),
        ("05.03.2024", "StudyDate"),
        ("03/05/2024", "StudyDate"),
        ("2024-03-05", "StudyDate"),
        ("05-MAR-2024", "StudyDate"),
        ("5 Mar 2024", "StudyDate"),
        ("DOB 12/03/84", "PatientBirthDate"),
        ("10:47", "StudyTime"),
        ("Name: Someone Else", "a label of an identifier (NAME)"),
        ("11/02/2019", "looks like a date"),
        ("14:21:07", "looks like a time"),
        ("3:05 PM", "looks like a time"),
        ("MRN 5538120", "a label of an identifier (MRN)"),
        ("9932871", "looks like an ID"),
        ("NYBERG, INGRID", "looks like a name"),
    ],
)
def test_identifying_text_matches_the_images_identifiers_in_any_common_format(text: str, why: str):
    ds = ultrasound_with_burned_name(PatientName="Holmberg^Freja", PatientID="19840312-4417")
    ds.AccessionNumber, ds.StudyDate, ds.StudyTime, ds.PatientBirthDate = "A7298652", "20240305", "104712", "19840312"
    assert identifying_reason(text, ds) == why


@pytest.mark.parametrize("text", ["5 cm", "L", "MI 0.9", "TIS 0.4", "Gn 52", "FR 28Hz", "C5-1", "12.0", "Depth 14",
                                  "10", "PW", "2D", "ABD"])  # fmt: skip
def test_annotations_that_identify_nobody_are_not_identifying(text: str):
    ds = ultrasound_with_burned_name(PatientName="Holmberg^Freja", PatientID="19840312-4417")
    ds.StudyDate, ds.StudyTime = "20240305", "104712"
    assert identifying_reason(text, ds) is None


# ------------------------------------------------------------------------------------------- the JSON


def test_burned_in_text_and_its_older_name_are_one_setting():
    assert Profile.from_json({"burnedInText": "mask-detected"}).burned_in == "mask-detected"
    assert Profile.from_json({"burnedInAnnotation": "mask-detected-phi"}).burned_in == "mask-detected-phi"
    assert Profile.from_json({"burnedInAnnotation": "keep", "burnedInText": "keep"}).burned_in == "keep"
    assert Profile.from_json({}).burned_in == "refuse"
    with pytest.raises(InvalidInput, match="disagree"):
        Profile.from_json({"burnedInAnnotation": "keep", "burnedInText": "mask-detected"})
    with pytest.raises(InvalidInput, match='"burnedInText" must be'):
        Profile.from_json({"burnedInText": "blur"})


# ------------------------------------------------------------------------------------------- compressed sources


@needs_ocr
def test_a_compressed_ultrasound_is_masked_and_written_in_its_own_lossless_syntax():
    """A real ultrasound capture (pydicom's US1_J2KR: JPEG 2000 lossless, the hospital's name and the scan's
    settings burned in): the text found is blacked out, the pixels compressed again as JPEG 2000 lossless."""
    import io

    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    ds = pydicom.dcmread(get_testdata_file("US1_J2KR.dcm"))
    stored = get_testdata_file("US1_J2KR.dcm", read=False)
    before = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, as_rgb=True)[0]
    decision = decide(ds, Profile(burned_in="mask-detected"))
    hospital = next(t for t in decision.texts if "BAPTIST" in t.box.text.upper())
    out = anonymize(ds, Profile(burned_in="mask-detected"), KEYS)
    buffer = io.BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    received = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    assert received.file_meta.TransferSyntaxUID == JPEG2000Lossless
    after = received.pixel_array
    if received.PhotometricInterpretation != "RGB":
        from pydicom.pixels import convert_color_space

        after = convert_color_space(after, received.PhotometricInterpretation, "RGB")
    x0, y0, x1, y1 = _corners(hospital.box)
    assert before[y0:y1, x0:x1].max() > 200 and after[y0:y1, x0:x1].max() == 0
    untouched = np.ones(after.shape[:2], dtype=bool)
    for rectangle in decision.rectangles[1]:
        untouched[rectangle.y : rectangle.y + rectangle.height, rectangle.x : rectangle.x + rectangle.width] = False
    np.testing.assert_array_equal(after[untouched], before[untouched])  # lossless: the rest is exact
    assert received.BurnedInAnnotation == "NO" and CLEAN_PIXEL_DATA in _codes(received)
    assert pydicom.dcmread(stored).PixelData == ds.PixelData  # the stored file is not changed
