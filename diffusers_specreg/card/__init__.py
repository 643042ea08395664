"""Model cards (`README.md` with Hub metadata) for models trained with `train_spectral.py` and `train_autoencoder.py`.

`write_model_card` renders `model_cards/template.md` (plain `string.Template` placeholders such as `$usage`: no Jinja,
so no dependency beyond `huggingface_hub`) and validates the result with `huggingface_hub.ModelCard`. The YAML
metadata holds:

- `library_name: diffusers`, a `pipeline_tag`, `tags` (`diffusers`, `diffusers-specreg`, `spectral-regularization`,
  the task, one `spectral-loss-<name>` per spectral loss, `edm` / `sagd` where used);
- `base_model` when the model was fine-tuned from a Hub model, `datasets` when it was trained on a Hub dataset
  (local paths are left out of the metadata: the Hub accepts only repo ids there);
- a `model-index` with the evaluation metrics as `EvalResult`s, which the Hub shows on the model page.

The body says what the model is, gives a usage snippet that runs, the sample grid and spectrum plot (relative image
links), the full training configuration as a table, the metrics table and the citations of the papers used.

Pipeline tag of audio models: the Hub has no unconditional audio generation task. `text-to-audio` and
`audio-to-audio` would promise an input the model does not take, and `unconditional-image-generation` would list an
audio model among image generators, so `AudioDiffusionPipeline` models get `pipeline_tag: other` with the tags
`audio`, `mel-spectrogram` and `unconditional-audio-generation` to be found by.

The metrics are the typed `diffusers_specreg.metrics.EvaluationResult` of `evaluate_pipeline` (a `metrics.json`
dict is read into one with `EvaluationResult.from_dict`): `log_rapsd_distance` (all, low, mid, high), `slope` (data,
model, gap), `fwd`, `fid` (optional), `num_samples`, `num_inference_steps`, `seed`, `sampler`, `dataset` ({"type",
"name"}), and for audio models `audio` (`AudioScores`: mrstft, log_spectral_distance, frechet_log_mel, ndb_k, ndb_js,
num_real, num_fake, sample_rate, clip_seconds, vocoder, spectrogram_figure, samples, data_samples). The audio metrics go
into the model-index and a second table; the spectrogram figure and links to the WAV files (paths relative to the
evaluation folder, the folder of `metrics.json`) into an "Audio samples" section. Files that do not exist in the
model folder are left out of the card rather than linked broken.

Modules: `tables` (constants, metric rows, citations), `metadata` (tags, model-index, what may be published),
`sections` (one function per part of the body), `write` (`write_model_card`, `update_model_card`), `autoencoder`
(`write_autoencoder_card`, the card of `train_autoencoder.py`) and `training` (`evaluate_and_write_card`, the quick
evaluation and card at the end of `train_spectral.py`). The package imports nothing of `diffusers_specreg.evaluate`
(the result types are `diffusers_specreg.metrics.results`), so that the evaluation can import it; `training` alone
runs the evaluation and is therefore not imported here: `from diffusers_specreg.card.training import ...`.
`diffusers_specreg.model_card` is the old path.
"""

from ..kinds import render_usage
from .autoencoder import write_autoencoder_card
from .metadata import (
    card_tags,
    eval_results,
    is_finite_number,
    is_hub_id,
    is_secret_key,
    modality_of,
    model_card_data,
    publishable_path,
    redact_config,
    uses_spectrum_matching,
)
from .sections import (
    audio_files,
    evaluation_command,
    render_audio,
    render_audio_metrics,
    render_citations,
    render_config_table,
    render_evaluation,
    render_samples,
    render_summary,
    render_training,
)
from .tables import (
    AUDIO_METRIC_ROWS,
    AUDIO_TASK,
    BASE_TAGS,
    CARD_UPDATE_FILES,
    CITATIONS,
    DATA_ROWS,
    IMAGE_TASK,
    METRIC_ROWS,
    MODALITIES,
    SECRET_KEY_PARTS,
    SPECTRAL_KEYS,
    TEMPLATE_NAME,
    TRAINING_ARGS_FILE,
)
from .write import card_update_error, foreign_card_files, load_template, update_model_card, write_model_card

__all__ = [
    "AUDIO_METRIC_ROWS",
    "AUDIO_TASK",
    "BASE_TAGS",
    "CARD_UPDATE_FILES",
    "CITATIONS",
    "DATA_ROWS",
    "IMAGE_TASK",
    "METRIC_ROWS",
    "MODALITIES",
    "SECRET_KEY_PARTS",
    "SPECTRAL_KEYS",
    "TEMPLATE_NAME",
    "TRAINING_ARGS_FILE",
    "audio_files",
    "card_tags",
    "card_update_error",
    "eval_results",
    "evaluation_command",
    "foreign_card_files",
    "is_finite_number",
    "is_hub_id",
    "is_secret_key",
    "load_template",
    "modality_of",
    "model_card_data",
    "publishable_path",
    "redact_config",
    "render_audio",
    "render_audio_metrics",
    "render_citations",
    "render_config_table",
    "render_evaluation",
    "render_samples",
    "render_summary",
    "render_training",
    "render_usage",
    "update_model_card",
    "uses_spectrum_matching",
    "write_autoencoder_card",
    "write_model_card",
]
