"""The fixed content of the model cards: file names, Hub tasks and tags, the order of the configuration table, the
metric rows (model-index and tables) and the BibTeX of every paper a card may cite."""

TEMPLATE_NAME = "template.md"
TRAINING_ARGS_FILE = "training_args.json"
IMAGE_TASK = "unconditional-image-generation"
AUDIO_TASK = "other"  # no Hub task fits unconditional audio generation, see the module docstring
BASE_TAGS = ("diffusers", "diffusers-specreg", "spectral-regularization")
MODALITIES = ("image", "audio")

# Settings listed first in the configuration table, in this order.
SPECTRAL_KEYS = (
    "spectral_loss",
    "spectral_weight",
    "final_spectral_weights",
    "spectral_weighting",
    "min_snr_gamma",
    "spectral_max_timestep",
    "spectral_max_sigma",
    "wavelet",
    "wavelet_levels",
    "noise_spectrum",
    "formulation",
    "edm_sigma_data",
    "edm_p_mean",
    "edm_p_std",
    "prediction_type",
)
# A configuration key containing one of these is never written (e.g. `hub_token`).
SECRET_KEY_PARTS = ("token", "password", "secret", "api_key", "apikey", "credential")

# (the value in an `EvaluationResult`, model-index metric type, display name, meaning); the data's slope is a property of
# the data and goes into the table only.
METRIC_ROWS = (
    (
        lambda r: r.log_rapsd_distance.all,
        "log-rapsd-distance",
        "log-RAPSD distance (all)",
        "mean abs. log10 power gap, lower is better",
    ),
    (
        lambda r: r.log_rapsd_distance.low,
        "log-rapsd-distance-low",
        "log-RAPSD distance (low)",
        "lowest third of frequencies",
    ),
    (lambda r: r.log_rapsd_distance.mid, "log-rapsd-distance-mid", "log-RAPSD distance (mid)", "middle third"),
    (
        lambda r: r.log_rapsd_distance.high,
        "log-rapsd-distance-high",
        "log-RAPSD distance (high)",
        "highest third, up to Nyquist",
    ),
    (
        lambda r: r.slope.model,
        "spectral-slope",
        "Spectral slope (samples)",
        "power-law exponent of the samples' spectrum",
    ),
    (
        lambda r: r.slope.gap,
        "spectral-slope-gap",
        "Spectral slope gap",
        "samples - data; 0 is best, < 0: missing high frequencies",
    ),
    (lambda r: r.fwd, "fwd", "Fréchet Wavelet Distance", "arXiv 2312.15289, lower is better"),
    (
        lambda r: r.fid if r.feature_extractor is None else None,
        "fid",
        "FID",
        "Inception features (user-supplied weights), lower is better",
    ),
    (
        lambda r: r.fid if r.feature_extractor is not None else None,
        "frechet-distance",
        "Fréchet distance (your features)",
        "on the features of the evaluation's --feature_extractor network (not Inception), lower is better",
    ),
)
DATA_ROWS = ((lambda r: r.slope.data, "Spectral slope (data)", "power-law exponent of the data's spectrum"),)
# Audio metrics of `evaluate_pipeline` for an AudioDiffusionPipeline (`diffusers_specreg.audio.audio_metrics`): set
# distances between Griffin-Lim clips of generated and of data mel images, all lower is better.
AUDIO_METRIC_ROWS = (
    (
        lambda r: r.audio.mrstft if r.audio else None,
        "mr-stft-distance",
        "MR-STFT distance",
        "spectral convergence + log-magnitude distance of the mean spectra, 3 resolutions (arXiv 1910.11480)",
    ),
    (
        lambda r: r.audio.log_spectral_distance if r.audio else None,
        "log-spectral-distance",
        "Log-spectral distance (dB)",
        "RMS dB gap between the mean power spectra",
    ),
    (
        lambda r: r.audio.frechet_log_mel if r.audio else None,
        "frechet-log-mel-distance",
        "Fréchet log-mel distance",
        "Fréchet distance of log-mel frame statistics (no pretrained network)",
    ),
    (
        lambda r: r.audio.ndb_k if r.audio else None,
        "ndb-k",
        "NDB/K",
        "share of k-means bins of log-mel frames with a significantly different proportion (arXiv 1805.12462)",
    ),
    (
        lambda r: r.audio.ndb_js if r.audio else None,
        "ndb-js",
        "NDB JS divergence",
        "Jensen-Shannon divergence of the bin histograms",
    ),
)

CITATIONS = {
    "2603.02447": (
        "Spectral regularization of the diffusion loss",
        "@article{papalexakis2026spectral,\n"
        "  title   = {Spectral Regularization for Diffusion Models},\n"
        "  author  = {Papalexakis and {Ver Steeg} and {Roque dos Santos} and Chandran and Wu},\n"
        "  journal = {arXiv preprint arXiv:2603.02447},\n"
        "  year    = {2026}\n"
        "}",
    ),
    "2510.09660": (
        "Spectrally anisotropic forward noise (SAGD)",
        "@article{scimeca2025learning,\n"
        "  title   = {Learning What Matters: Steering Diffusion via Spectrally Anisotropic Forward Noise},\n"
        "  author  = {Scimeca and Jiralerspong and Earnshaw and Hartford and Bengio},\n"
        "  journal = {arXiv preprint arXiv:2510.09660},\n"
        "  year    = {2025}\n"
        "}",
    ),
    "2603.14645": (
        "Spectrum matching",
        "@article{ning2026spectrum,\n"
        "  title   = {Spectrum Matching: a Unified Perspective for Superior Diffusability in Latent Diffusion},\n"
        "  author  = {Ning and Li and Zhang and Liu and Blaschko and Salah and {Onal Ertugrul}},\n"
        "  journal = {arXiv preprint arXiv:2603.14645},\n"
        "  year    = {2026}\n"
        "}",
    ),
    "2206.00364": (
        "EDM formulation",
        "@inproceedings{karras2022elucidating,\n"
        "  title     = {Elucidating the Design Space of Diffusion-Based Generative Models},\n"
        "  author    = {Karras, Tero and Aittala, Miika and Aila, Timo and Laine, Samuli},\n"
        "  booktitle = {Advances in Neural Information Processing Systems},\n"
        "  year      = {2022}\n"
        "}",
    ),
    "1910.11480": (
        "Multi-resolution STFT distance (audio evaluation)",
        "@inproceedings{yamamoto2020parallel,\n"
        "  title     = {Parallel {WaveGAN}: A Fast Waveform Generation Model Based on Generative Adversarial Networks "
        "with Multi-Resolution Spectrogram},\n"
        "  author    = {Yamamoto, Ryuichi and Song, Eunwoo and Kim, Jae-Min},\n"
        "  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},\n"
        "  year      = {2020}\n"
        "}",
    ),
    "1805.12462": (
        "Number of statistically different bins, NDB (audio evaluation)",
        "@inproceedings{richardson2018gans,\n"
        "  title     = {On {GANs} and {GMMs}},\n"
        "  author    = {Richardson, Eitan and Weiss, Yair},\n"
        "  booktitle = {Advances in Neural Information Processing Systems},\n"
        "  year      = {2018}\n"
        "}",
    ),
    "2312.15289": (
        "Fréchet Wavelet Distance (evaluation)",
        "@inproceedings{veeramacheneni2025fwd,\n"
        "  title     = {Fr{\\'e}chet Wavelet Distance: A Domain-Agnostic Metric for Image Generation},\n"
        "  author    = {Veeramacheneni, Lokesh and Wolter, Moritz and Kuehne, Hildegard and Gall, Juergen},\n"
        "  booktitle = {International Conference on Learning Representations},\n"
        "  year      = {2025}\n"
        "}",
    ),
}

# what a card update writes into a model folder
CARD_UPDATE_FILES = ("README.md", TRAINING_ARGS_FILE, "evaluation")
