"""cas_edu: learn and reproduce Channel-wise Activation Suppressing (Bai et al., ICLR 2021, arXiv 2103.08307).

Package map: which module owns what. Each module imports only modules listed above it (the two lazy,
call-time exceptions are named), so a newcomer can read the package from the top down.

Foundation (torch only)
    tables       markdown and plain-text tables (``markdown_table``, ``text_table``).
    cas          the CAS module (``CASModule``), its auxiliary loss, ``straight_through`` (BPDA) and the one
                 CAS-module lookup through wrappers (``find_cas_modules``, ``unwrap_parallel``).
    runtime      devices, seeding (``seed_everything``, ``seeded``), RNG state, AMP / channels-last, progress bars,
                 ``compile_blocks`` (``seeded`` checks its seed with validation at call time).
    models       architectures (small CNN, ResNet-18 at any width, WRN-34-10, ``build``) and model facts: ``model_device``,
                 ``model_dtype``, ``num_classes``, ``eval_mode``, ``has_cas``, ``forward_with_aux``.
    validation   the one input rule at the public boundary (images, labels, batch sizes, seeds).
    data         datasets: digits offline; MNIST, Fashion-MNIST, CIFAR-10, SVHN from ``CAS_EDU_DATA``.
Science
    attacks      FGSM and PGD (untargeted or targeted; PGD with random restarts), CW∞, straight-through PGD,
                 the TRADES KL attack, AutoAttack.
    losses       training objectives: CE(+CAS), TRADES(+CAS), MART(+CAS) as the official files compute them.
    activations  a layer's channel activations under attack: capture, the paper's statistics (Figures 1-2),
                 what a CAS module does to a layer (``channel_data``, ``suppressed_channels``), saturation.
    observations the paper's two observations with intervals: quiet and woken channels per class, the ±ε
                 sign-noise null, stratified bootstrap (``measure_observations``, ``observation_table``).
    evaluation   the attack registry (``REGISTRY``), per-example ``accuracy``, ``robustness_curve``,
                 ``evaluate`` and its ``EvaluationReport``, paired comparisons, gradient-masking warnings.
    presets      every configuration: ``TrainConfig``, ``make_config``, the official settings, notebook profiles.
Runs and files
    checkpoint   atomic checkpoints, loading with ``weights_only=True``; run_folder: locks, kept reports.
    distributed  DDP helpers; training: the trainer (``train`` = ``set_up`` → ``run_epoch`` → ``validate``
                 → ``save`` per epoch), resume rules.
Presentation and entry points (only plots and widgets import plotly / ipywidgets)
    plots        static figures from computed data (one palette); widgets: the explorers, thin controls.
    cli          ``python -m cas_edu train | evaluate | activations | notebooks``.
    course       the shipped course (package data ``cas_edu.notebooks``) and ``copy_notebooks``.
    hosted       the notebooks on Colab: the set-up cell's ``set_up_colab``, runs on Google Drive (``runs_dir``).
    pipeline     the notebooks' runs: notebook 04's suite (configs for a profile, train or reuse, evaluate,
                 results, CAS gains) and the models notebooks 02-03 probe (``observation_configs``).
    exercises    the notebooks' exercise checkers (imports pipeline; pipeline's deprecated
                 ``check_cas_gains`` alias imports exercises at call time).
    channels     deprecated alias module of the CAS-mask part of activations, kept for one release.
"""
from .checkpoint import load_checkpoint

__version__ = "0.1.0"
__all__ = ["load_checkpoint", "__version__"]
