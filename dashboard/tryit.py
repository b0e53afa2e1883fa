"""The job page's "Try it": upload an image, ask the job's model, see its answer drawn.

The answer comes from ``POST /api/jobs/{id}/try/{skill}``, which ``dreamforge serve`` answers in
Moondream Station's shapes (coordinates image-relative, 0–1), so what is drawn here is what a
Station client of the served model gets.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import streamlit as st
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from dashboard import ui
from dashboard.api import ApiError
from pipeline.stage_table import SKILLS

COLOUR = (255, 64, 32)


def draw_answer(image: Image.Image, answer: dict[str, Any]) -> tuple[Image.Image, str]:
    """``image`` with the answer's boxes and points drawn, and a sentence saying what was found."""
    out = image.convert("RGB")
    d = ImageDraw.Draw(out)
    w, h = out.size
    width = max(2, round(min(w, h) / 150))
    if "objects" in answer:
        for o in answer["objects"]:
            box = (o["x_min"] * w, o["y_min"] * h, o["x_max"] * w, o["y_max"] * h)
            d.rectangle(box, outline=COLOUR, width=width)
            if o.get("label"):
                d.text((box[0] + width, box[1] + width), o["label"], fill=COLOUR)
        n = len(answer["objects"])
        return out, f"{n} object{'s' * (n != 1)} found"
    if "points" in answer:
        r = 2 * width
        for p in answer["points"]:
            x, y = p["x"] * w, p["y"] * h
            d.ellipse((x - r, y - r, x + r, y + r), outline=COLOUR, width=width)
        n = len(answer["points"])
        return out, f"{n} point{'s' * (n != 1)} found"
    if "bbox" in answer:  # segment: the outline's box (the SVG path is in the raw answer)
        b = answer["bbox"] or {}
        if b:
            d.rectangle((b["x_min"] * w, b["y_min"] * h, b["x_max"] * w, b["y_max"] * h), outline=COLOUR, width=width)
        return out, "outline found" if answer.get("path") else "nothing found"
    return out, f"caption: {answer.get('caption', '')}"


def section(job: dict[str, Any]) -> None:
    skills = SKILLS.get(job["task"], ())
    if not skills:
        return
    st.subheader("Try it")
    st.caption("Ask the released model about an image of your own. The first request starts the model (seconds).")
    cols = st.columns([3, 2])
    upload = cols[0].file_uploader("Image", type=["png", "jpg", "jpeg", "webp"], key="try_image")
    skill = cols[1].radio("Ask it to", skills, horizontal=True, key="try_skill")
    obj = cols[1].text_input("Object (optional)", key="try_object", placeholder="all categories") if skill != "caption" else ""
    if upload is None:
        return
    data = upload.getvalue()
    try:
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))  # drawn as the server reads it: upright
    except (UnidentifiedImageError, OSError):
        st.error(f"{upload.name} is not an image this page can read")
        return
    url = f"data:{upload.type or 'image/png'};base64,{base64.b64encode(data).decode()}"
    body = {"image_url": url, **({"object": obj.strip()} if obj and obj.strip() else {})}
    with st.spinner("asking the model…"):
        try:
            answer = ui.api().try_model(job["jobId"], skill, body)
        except ApiError as e:
            st.error(str(e))
            return
    drawn, found = draw_answer(image, answer)
    st.image(drawn, caption=f"{upload.name}: {found}")
    with st.expander("Answer (Moondream Station's JSON)"):
        st.json(answer)
