"""The web page (Gradio): upload a photo, see it deblurred, download it at full resolution.

`build(service, examples, about)` lays out the page around a `Service` (`ifan_jax.app.service`):
an upload box (JPEG/PNG/TIFF, the file's own bytes, so 16 bits stay 16 bits), example photos, a
before/after slider, a 1:1 before/after crop where the photo is most out of focus, the defocus
map, a status line and download buttons for the full-resolution result and defocus map, and the
intent controls of `ifan_jax.inference.intent`: a strength slider, a keep-the-bokeh switch with a
level slider (set to the photo's automatic level when switched on), and the readout. Choosing a
file or an example first clears the previous result and its downloads (so a failed upload shows
only its error), then runs it; one progress bar (tiles done, on the before/after panel) shows
while it runs. Changing a control (dragging a slider, typing a value and pressing Enter or
leaving the box, the switch) re-blends the last photo without running the network again, in two
steps (`Service.reblend`, `Service.download`): the previews and the crop change at once with no
panel blanked, then the full-resolution download and the readout follow (the download button is
disabled meanwhile, so the download is always what the page shows). Every network run and
re-blend goes through one queue that runs one request at a time (concurrency 1), so the
accelerator holds one photo at a time and queued visitors see their place in line; downloads are
written in a second queue. A file that cannot be deblurred shows its one-line reason on the page
and leaves the server serving.

`launch(demo, host, port, max_queue)` serves it (no share link, no analytics).
"""

from __future__ import annotations

import os

import gradio as gr

from ifan_jax.errors import UserError

FILE_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff"]
QUEUE = "model"  # the one concurrency group: one request on the accelerator at a time
DOWNLOADS = "downloads"  # full-resolution downloads of re-blends, one at a time beside it
# A number typed into a slider's box applies on Enter as it does on leaving the box: Gradio's
# slider re-blends on "release", which its number box fires on blur only.
HEAD = """<script>
document.addEventListener("keydown", (event) => {
  const box = event.target;
  if (event.key === "Enter" && box.matches && box.matches(
      "#strength input[type=number], #level input[type=number]")) {
    event.preventDefault();
    box.blur();
  }
}, true);
</script>"""
CSS = "#status {min-height: 3em} footer {display: none !important}"
# The keep-bokeh level slider, in the units of |defocus| (the readout's levels are 0.125-0.5).
LEVEL_MIN, LEVEL_MAX, LEVEL_STEP = 0.005, 2.0, 0.005


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
                readout = gr.Markdown("", elem_id="readout")
                strength = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Strength",
                                     info="0: the photo as it was; 1: the full deblur",
                                     elem_id="strength")
                keep = gr.Checkbox(False, label="Keep the bokeh (leave strongly out-of-focus "
                                                "areas as they were)", elem_id="keep_bokeh")
                level = gr.Slider(LEVEL_MIN, LEVEL_MAX, value=LEVEL_MIN, step=LEVEL_STEP,
                                  label="Keep-bokeh level (|defocus|: full deblur below it, the "
                                        "input above twice it; set from the photo when switched "
                                        "on)", visible=False, elem_id="level")
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

        held = gr.State(None)  # the key of this visitor's photo in the service (for re-blending)
        view = gr.State(None)  # the service's Result of the blend the page shows (for its download)
        # Whether the level is the photo's automatic one (the switch sets it; moving the level
        # slider makes it the visitor's): a new strength keeps the automatic level automatic.
        auto = gr.State(True)

        outputs = [compare, crop, defocus, status, download, download_map, readout, held, level,
                   view, auto]
        shown_now = [compare, crop, status, download, level, view, auto]  # what a re-blend changes
        finished = [download, readout]  # what its download step changes

        def ready(result):
            return gr.DownloadButton(value=result.output, interactive=True,
                                     label=f"Download {os.path.basename(result.output)}")

        def level_shown(level_value):
            return (gr.skip() if level_value is None else
                    gr.Slider(value=round(level_value, 3), visible=True))

        def shown(result, level_value=None):
            """The outputs for a processed photo (in `outputs`' order)."""
            return ((result.before, result.after), (result.crop_before, result.crop_after),
                    result.defocus_preview, result.summary, ready(result),
                    gr.DownloadButton(value=result.defocus, interactive=result.defocus is not None),
                    result.readout_text, result.key, level_shown(level_value), result, True)

        def clear(path):
            """As a new upload starts (and so also when it fails): no previous result or download."""
            return (None, None, None, "Deblurring..." if path else "Choose a photo or an example.",
                    gr.DownloadButton(value=None, interactive=False,
                                      label="Download the deblurred photo"),
                    gr.DownloadButton(value=None, interactive=False), "", None, gr.skip(), None,
                    gr.skip())

        def keep_value(keep_on, level_value, automatic):
            return None if not keep_on else ("auto" if automatic else float(level_value))

        def deblur(path, strength_value, keep_on, level_value, progress=gr.Progress()):
            if not path:  # the file was removed: nothing to show
                return [gr.skip()] * len(outputs)
            with _one_line_errors(path):
                result = service.process(
                    path, lambda done, total: progress((done, total), desc="Deblurring",
                                                       unit="tiles"),
                    strength=strength_value, keep_bokeh=keep_value(keep_on, level_value, True))
            return shown(result, result.level if keep_on else None)

        def reblend(key, strength_value, keep_on, level_value, automatic):
            if not key:  # no photo yet: the controls only set how the next one is blended
                return [gr.skip()] * len(shown_now)
            with _one_line_errors(None):
                result = service.reblend(key, strength_value,
                                         keep_value(keep_on, level_value, automatic))
            return ((result.before, result.after), (result.crop_before, result.crop_after),
                    result.summary,
                    gr.DownloadButton(interactive=False, label="Preparing the download..."),
                    level_shown(result.level if keep_on and automatic else None), result,
                    automatic)

        def finish(result):
            """The re-blend's full-resolution download and readout (skipped when superseded)."""
            done = None if result is None else service.download(result)
            if done is None:
                return [gr.skip()] * len(finished)
            return ready(done), done.readout_text

        controls = [strength, keep, level]
        # One listener for uploads and examples (both change the file), so one queue serves both;
        # the page is cleared first, so a failed upload leaves no earlier result beside its error.
        # One progress bar, on the before/after panel.
        upload.change(clear, inputs=[upload], outputs=outputs, queue=False, show_progress="hidden",
                      api_visibility="undocumented").then(
            deblur, inputs=[upload, *controls], outputs=outputs, concurrency_limit=1,
            concurrency_id=QUEUE, api_name="deblur", show_progress="full",
            show_progress_on=[compare])
        # The controls re-blend the last photo without running the network: the previews at once,
        # nothing blanked (no progress shown), only the newest of quick changes; then the download.
        quick = dict(outputs=shown_now, concurrency_limit=1, concurrency_id=QUEUE,
                     show_progress="hidden", trigger_mode="always_last")
        then = dict(inputs=[view], outputs=finished, concurrency_limit=1,
                    concurrency_id=DOWNLOADS, show_progress="hidden", api_visibility="undocumented")
        strength.release(reblend, inputs=[held, *controls, auto], api_name="reblend", **quick
                         ).then(finish, **then)
        level.release(lambda key, s, k, v: reblend(key, s, k, v, False), inputs=[held, *controls],
                      api_visibility="undocumented", **quick).then(finish, **then)
        keep.input(lambda key, s, k, v: reblend(key, s, k, v, True), inputs=[held, *controls],
                   api_visibility="undocumented", **quick).then(finish, **then)
        keep.change(lambda on: gr.Slider(visible=on), inputs=[keep], outputs=[level], queue=False,
                    show_progress="hidden", api_visibility="undocumented")
    return demo


class _one_line_errors:
    """Turn what a request raises into one line on the page (gr.Error); the server goes on."""

    def __init__(self, path):
        self.name = os.path.basename(path) if path else None

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is None:
            return False
        prefix = f"{self.name}: " if self.name else ""
        if isinstance(e, UserError):  # an UploadError names the file itself
            message = str(e) if str(e).startswith(prefix) else f"{prefix}{e}"
            raise gr.Error(message, title="Cannot deblur this file", print_exception=False
                           ) from None
        if isinstance(e, MemoryError):
            raise gr.Error(f"{prefix}out of memory", print_exception=False) from None
        if not isinstance(e, Exception):
            return False
        reason = (str(e).strip().splitlines() or [""])[0]
        if "RESOURCE_EXHAUSTED" in reason or "out of memory" in reason.lower():
            reason = "out of memory"
        raise gr.Error(f"{prefix}{type(e).__name__}: {reason}", print_exception=False) from None


def launch(demo: gr.Blocks, host: str, port: int, max_queue: int, allowed: list[str]) -> None:
    """Serve `demo` on host:port until interrupted; at most `max_queue` requests wait. Gradio's
    own start-up lines are silenced (its "set `share=True`" hint names an option the command does
    not have); one line says where the page is."""
    demo.queue(default_concurrency_limit=1, max_size=max_queue)
    demo.launch(server_name=host, server_port=port, share=False, show_error=True,
                allowed_paths=allowed, css=CSS, head=HEAD, footer_links=[], pwa=False, mcp_server=False,
                ssr_mode=False, quiet=True, prevent_thread_lock=True)
    shown = f"[{host}]" if ":" in host else host
    print(f"app: serving on http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    demo.block_thread()
