"""The web page (Gradio): upload a photo, see it deblurred, download it at full resolution.

`build(service, examples, about)` lays out the page around a `Service` (`ifan_jax.app.service`):
an upload box (JPEG/PNG/TIFF, the file's own bytes, so 16 bits stay 16 bits), example photos, a
before/after slider, a 1:1 before/after crop where the photo is most out of focus, the defocus
map, a status line and download buttons for the full-resolution result and defocus map. Choosing a
file or an example runs it; progress (tiles done) shows while it runs. Every run goes through one
queue that runs one request at a time (concurrency 1), so the accelerator holds one photo at a
time and queued visitors see their place in line. A file that cannot be deblurred shows its
one-line reason on the page and leaves the server serving.

`launch(demo, host, port, max_queue)` serves it (no share link, no analytics).
"""

from __future__ import annotations

import os

import gradio as gr

from ifan_jax.app.service import UploadError

FILE_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff"]
QUEUE = "model"  # the one concurrency group: one request on the accelerator at a time
CSS = "#status {min-height: 3em} footer {display: none !important}"


def build(service, examples: list[tuple[str, str]], about: str) -> gr.Blocks:
    """The page; `about` is the Markdown line that names the model and the device."""
    with gr.Blocks(title="IFAN defocus deblurring", analytics_enabled=False,
                   delete_cache=(900, 3600)) as demo:
        gr.Markdown("# Defocus deblurring with IFAN\n" + about)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                upload = gr.File(label="Photo (JPEG, PNG or TIFF; 8 or 16 bit; any size)",
                                 file_types=FILE_TYPES, type="filepath", elem_id="upload")
                if examples:
                    gr.Examples([[path] for path, _ in examples], inputs=[upload],
                                label="Examples (sample photos defocused by the synthetic "
                                      "data set's renderer)",
                                example_labels=[label for _, label in examples],
                                cache_examples=False, elem_id="examples")
                status = gr.Markdown("Choose a photo or an example.", elem_id="status")
                download = gr.DownloadButton("Download the deblurred photo", interactive=False,
                                             variant="primary", elem_id="download")
                download_map = gr.DownloadButton("Download the defocus map", interactive=False,
                                                 elem_id="download_defocus")
            with gr.Column(scale=2):
                compare = gr.ImageSlider(label="Before / after (drag the handle)", type="filepath",
                                         format="png", interactive=False, elem_id="compare")
                with gr.Row():
                    crop = gr.ImageSlider(label="1:1 crop where the photo is most out of focus",
                                          type="filepath", format="png", interactive=False,
                                          elem_id="crop")
                    defocus = gr.Image(label="Defocus map (purple: low, yellow: high)",
                                       type="filepath", format="png", interactive=False,
                                       buttons=["download", "fullscreen"], elem_id="defocus")

        def deblur(path, progress=gr.Progress()):
            if not path:  # the file was removed: leave the page as it is
                return [gr.skip()] * 6
            try:
                result = service.process(
                    path, lambda done, total: progress((done, total), desc="Deblurring",
                                                       unit="tiles"))
            except UploadError as e:
                raise gr.Error(str(e), title="Cannot deblur this file", print_exception=False
                               ) from None
            except MemoryError:
                raise gr.Error(f"{os.path.basename(path)}: out of memory", print_exception=False
                               ) from None
            except Exception as e:  # one line on the page; the server goes on serving
                reason = (str(e).strip().splitlines() or [""])[0]
                if "RESOURCE_EXHAUSTED" in reason or "out of memory" in reason.lower():
                    reason = "out of memory"
                raise gr.Error(f"{os.path.basename(path)}: {type(e).__name__}: {reason}",
                               print_exception=False) from None
            return ((result.before, result.after), (result.crop_before, result.crop_after),
                    result.defocus_preview, result.summary,
                    gr.DownloadButton(value=result.output, interactive=True,
                                      label=f"Download {os.path.basename(result.output)}"),
                    gr.DownloadButton(value=result.defocus, interactive=result.defocus is not None))

        # One listener for uploads and examples (both change the file), so one queue serves both.
        upload.change(deblur, inputs=[upload],
                      outputs=[compare, crop, defocus, status, download, download_map],
                      concurrency_limit=1, concurrency_id=QUEUE, api_name="deblur",
                      show_progress="full")
    return demo


def launch(demo: gr.Blocks, host: str, port: int, max_queue: int, allowed: list[str]) -> None:
    """Serve `demo` on host:port until interrupted; at most `max_queue` requests wait. Gradio's
    own start-up lines are silenced (its "set `share=True`" hint names an option the command does
    not have); one line says where the page is."""
    demo.queue(default_concurrency_limit=1, max_size=max_queue)
    demo.launch(server_name=host, server_port=port, share=False, show_error=True,
                allowed_paths=allowed, css=CSS, footer_links=[], pwa=False, mcp_server=False,
                ssr_mode=False, quiet=True, prevent_thread_lock=True)
    shown = f"[{host}]" if ":" in host else host
    print(f"app: serving on http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    demo.block_thread()
