"""Over HTTP, step 4: an image in a message, read with OCR.

    export MEMOS_BASE_URL=http://127.0.0.1:8765 MEMOS_API_KEY=<key>   # see client_add_and_search.py
    python cookbook/client_image.py

Messages take OpenAI-style content parts: ``{"type": "text", ...}`` and ``{"type":
"image_url", "image_url": {"url": ...}}``. A server accepts http(s) and ``data:`` URLs (never
a path on its own disk). The fast stage stores one memory per image (who shared it, when, the
text around it; a data URL is shown by its size, never copied); the fine stage fetches the
image and adds the text found in it when the server has ``tesseract`` (``apt-get install
tesseract-ocr``). An image that cannot be read is recorded on the memory's source, never fatal.
Needs Pillow here, to draw the image.
"""

from __future__ import annotations

import base64
import io
import sys

from PIL import Image, ImageDraw, ImageFont

from memos_core.client import MemOSClient


def receipt_png() -> bytes:
    """A small PNG with two lines of large text, as a photo of a receipt would have."""
    img = Image.new("RGB", (900, 260), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=48)
    draw.text((40, 40), "INVOICE 4711", fill="black", font=font)
    draw.text((40, 130), "TOTAL 99 EUR", fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    with MemOSClient() as client:  # MEMOS_BASE_URL and MEMOS_API_KEY from the environment
        url = "data:image/png;base64," + base64.b64encode(receipt_png()).decode()
        r = client.add_message(
            [
                {
                    "role": "user",
                    "id": "img1",
                    "content": [
                        {"type": "text", "text": "Here is the receipt for the new desk"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
            user_id="user_img",
            conversation_id="conv_receipts",
            async_mode=False,  # wait for the fine stage, which reads the image
        )
        print(f"added {len(r.data.memory_ids)} memories; fine stage {r.data.status}")
        if r.data.status != "completed":
            sys.exit("the fine stage did not complete")

        images = []
        for memory_id in r.data.memory_ids:
            item = client.get_memory(memory_id, user_id="user_img").data
            if any(s.type == "image" for s in item.sources):
                images.append(item)
        if not images:
            sys.exit("no image memory was stored")
        for item in images:
            print("stored image memory:")
            for line in item.memory.splitlines():
                print(f"  | {line}")
            errors = [s.error for s in item.sources if s.error]
            if "Text in the image:" in item.memory:
                print("OCR text found")
            else:
                print(f"no OCR text (is tesseract installed on the server?) {errors or ''}".rstrip())

        hits = client.search_memory(
            "the receipt for the desk", user_id="user_img", top_k=3
        ).data.memory_detail_list
        for h in hits:
            print(f"hit {h.score:.3f} ({h.sources[0].type}): {h.memory.splitlines()[0]}")
        if images[0].id not in [h.id for h in hits]:
            sys.exit("the image memory was not found")
        print("found the image memory")


if __name__ == "__main__":
    main()
