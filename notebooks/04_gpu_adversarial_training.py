# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · The full pipeline: AT, TRADES and MART, each with and without CAS
#
# Notebook 03 built the CAS module and trained one AT+CAS model. Here we run the paper's whole comparison:
# three adversarial-training methods, each **without and with CAS** — six models trained the same way and
# evaluated on the same test images with the same attacks.
#
# | method | training loss on a batch (x, y), x′ = an attack on x | with CAS (official code), $\beta_c = 2$, mean over the $S$ auxiliary heads |
# |---|---|---|
# | AT (PGD-AT, Madry et al.) | $\mathrm{CE}(f(x'), y)$, x′ from PGD on the cross-entropy | $+\ \beta_c\,\mathrm{mean}_s\,\mathrm{CE}(\text{aux}_s(x'), y)$ |
# | TRADES (Zhang et al.) | $\mathrm{CE}(f(x), y) + \beta_T\,\mathrm{KL}(p(x)\,\Vert\,p(x'))$, x′ maximises the KL | $+\ \beta_c\,\mathrm{mean}_s\,\mathrm{CE}(\text{aux}_s(x), y) + \beta_T\beta_c\,\mathrm{mean}_s\,\mathrm{KL}(p_{\text{aux}_s}(x)\,\Vert\,p_{\text{aux}_s}(x'))$ — the auxiliary CE is on the *natural* input |
# | MART (Wang et al.) | boosted CE on x′ $+\ \beta_M\,\mathrm{KL}(p(x)\Vert p(x'))\,(1 - p_y(x))$, x′ from PGD started at $x + 0.001\,\mathcal{N}(0, 1)$ | $+\ \beta_c\,\mathrm{mean}_s$ boosted CE$(\text{aux}_s(x'), y) + \beta_M\beta_c\,\mathrm{mean}_s\,\mathrm{KL}(p_{\text{aux}_s}(x)\Vert p_{\text{aux}_s}(x'))\,(1 - p_y(x))$, with $p_y(x)$ the *main* head's probability (as the official code does) |
#
# With CAS, every training attack also targets the auxiliary heads (the adaptive objective: the method's
# attack loss plus $\beta_c$ times the same loss on each auxiliary head). `cas_edu.losses.trades_loss` and
# `mart_loss` follow the official `Trades/trades_reg.py` and `MART/mart_reg.py` term by term (tested).
#
# **Profiles.** A config cell picks one:
#
# * `cpu` (default, what the tests run): 8×8 digits, a small CNN, 6 short epochs, PGD-5 training attacks;
#   `best.pt` evaluated on 200 test images, with Square (a reduced budget) and the straight-through attack
#   on a class-balanced 100 of them. Finishes on a laptop in a few minutes.
# * `gpu`: CIFAR-10, ResNet-18 with CAS on both blocks of layer4, the official schedules (AT 200 epochs,
#   TRADES 100, MART 120); `best.pt` (chosen on the validation split) evaluated with the white-box attacks
#   on all 10,000 test images, and with Square, AutoAttack and the straight-through attacks on a seeded,
#   class-balanced 1,000 (the table prints the count beside every number). Set
#   `CAS_EDU_PROFILE=gpu` (and `CAS_EDU_DATA` to the folder holding CIFAR-10) before starting Jupyter.
#   That is many GPU-hours: train the runs with the command line first (the notebook prints the commands)
#   and the notebook reuses the finished checkpoints.
# * `colab`: CIFAR-10 and ResNet-18 sized for a free hosted GPU — AT and AT+CAS only, the `fast` one-cycle
#   schedule shortened to 10 epochs with PGD-5 training attacks, fp32; `best.pt` evaluated on 1,000 test images,
#   the costly attacks on a class-balanced 200. The cell after the config prints its estimated training time from
#   the FLOP count (an estimate, not a measurement).
#
# Any other profile name stops the next cell with an error that names the valid ones.

# %%
import os

from cas_edu import presets

PROFILE = presets.get_profile(os.environ.get("CAS_EDU_PROFILE", "cpu")).name   # cpu (default), colab or gpu; ValueError for others
DATA_ROOT = os.environ.get("CAS_EDU_DATA")          # folder with CIFAR-10 for the gpu/colab profiles (nothing is downloaded)
DATASET = presets.get_profile(PROFILE).dataset      # digits (cpu) or cifar10 (gpu, colab)
EPS = None                  # None: the dataset's default L∞ budget (digits 0.1, CIFAR-10 8/255)
EPOCHS = None               # None: the profile's (cpu: 6; colab: 10; gpu: the paper's per method)
DEVICE = "auto"             # CUDA, then MPS, then CPU
SEED = 0
RUNS_DIR = "runs"           # runs land in RUNS_DIR/<profile>/<method>[+cas]

# %%
from cas_edu import data, exercises, pipeline, plots, presets, runtime

profile = presets.get_profile(PROFILE)
device = runtime.resolve_device(DEVICE)
ds = data.load(DATASET, root=DATA_ROOT)
print(f"profile {profile.name}: {profile.description}")
if profile.name == "colab":  # an estimate from the FLOP count (presets.estimate_train_seconds), not a measurement
    seconds = sum(presets.estimate_train_seconds(c, presets.COLAB_T4_FP32_FLOPS)
                  for c in pipeline.suite_configs(profile, epochs=EPOCHS).values())
    print(f"estimated training time on a free-tier T4 in fp32 at 30 % of its peak: {seconds / 3600:.1f} h")
print(f"device: {device.type}; {ds.name}: train {len(ds.train)}, val {len(ds.val)}, test {len(ds.test)} images of shape {ds.input_shape}")

# %% [markdown]
# ## 1 · Six runs, and how to train them outside the notebook
#
# `pipeline.suite_configs` builds the six training configurations. Each run lives in
# `notebooks/runs/<profile>/<run>`; a run that finished there with exactly the same configuration is
# **reused**, whether this notebook or the command line trained it. So on a GPU machine you can train in
# the background (e.g. under `nohup`, one command per run, `--resume` continues an interrupted run) and
# open the notebook when they are done. The commands, from the repository root:

# %%
configs = pipeline.suite_configs(profile, seed=SEED, device=DEVICE, epochs=EPOCHS, eps=EPS)
for name, config in configs.items():
    out_dir = f"{RUNS_DIR}/{profile.name}/{name}"
    state = "finished, will be reused" if pipeline.is_finished(config, out_dir) else "to train"
    print(f"# {pipeline.display_name(name)}: {config.epochs} epochs, {state}")
    print(pipeline.cli_command(config, f"notebooks/{out_dir}"))

# %% [markdown]
# ## 2 · Train (or reuse) all six
#
# A progress bar per run; the validation accuracy under PGD-10 (adaptive objective for CAS models) is
# logged after every epoch. On the `cpu` profile this is the slow cell (about a minute on an idle
# 2-core machine).

# %%
suite = pipeline.run_suite(profile, RUNS_DIR, dataset=ds, seed=SEED, device=DEVICE, epochs=EPOCHS, data_root=DATA_ROOT,
                           progress=True)
print(suite.summary())

# %% [markdown]
# Training curves, one colour per method; CAS runs are dashed. TRADES' loss is on another scale (it adds a
# KL term), so compare accuracies rather than losses across methods.

# %%
histories = {pipeline.display_name(name): history for name, history in suite.histories.items()}
plots.training_curves_figure(histories, title=f"Training curves, {profile.name} profile ({ds.name}, {configs['pgd_at'].model})").show()

# %% [markdown]
# ## 3 · Evaluate all six the same way
#
# Every model's `best.pt` (chosen on the validation split) meets the same test images and attacks: natural
# accuracy, FGSM, PGD-20, CW∞ (20 steps of the margin loss), the black-box Square attack, a
# **straight-through** PGD (100 steps × 5 restarts; for CAS models the backward pass goes through the
# softmax-weighted mask so that gradients can see the argmax that picks the mask — BPDA), and on the `gpu`
# profile AutoAttack, plain and straight-through. For CAS models every white-box attack runs twice — on the
# main head alone and with the adaptive objective (main + β · auxiliary losses), as notebook 03 explained;
# for models without CAS both columns hold the same attack.
#
# The **worst case** column counts an image only if the model classifies it correctly naturally *and* under
# every attack — the per-example worst case, the number to quote. (Taking the lowest column instead would
# overstate robustness: two attacks can break different images.) On the `cpu` profile the budget is
# reduced — 200 test images (one image = half a point), the costly attacks on a class-balanced 100 of them,
# 500 Square queries instead of 5,000; the first row of the table gives the count of every column.

# %%
eps = configs["pgd_at"].eps
reports = pipeline.evaluate_suite(suite, ds, eps, device=DEVICE, seed=SEED, progress=True)
print(f"accuracy in % of best.pt, L∞ ε = {eps:.4g}; Square with {profile.square_queries} queries")
print(pipeline.results_table(reports))

# %%
plots.robustness_comparison_figure({pipeline.display_name(k): r for k, r in reports.items()},
                                   title=f"Accuracy under each attack ({profile.name} profile, ε = {eps:.3g}, "
                                         f"{next(iter(reports.values())).n_examples} test images)").show()

# %%
gains = pipeline.cas_gains(reports)
main_gains = pipeline.cas_gains(reports, "PGD-20 main head")
intervals = pipeline.cas_gain_intervals(reports)  # paired: both models saw the same images
for method in gains:
    print(f"{method:>7}: CAS changes main-head PGD-20 by {main_gains[method]:+.1f} points; "
          f"the worst case by {intervals[method]}")
for name, report in reports.items():
    for warning in report.warnings:
        print(f"{pipeline.display_name(name)}: {warning}")


# %% [markdown]
# **How to read these lines.** Each worst-case change comes with a paired 95 % interval: both models were
# evaluated on the same images, so the interval counts the images on which exactly one of the two is right.
# An interval that contains 0 means the data cannot tell whether CAS helps on this problem — say exactly that,
# not "CAS adds x points". Then compare the main-head change with the worst-case change: where the main head
# credits CAS with more than the worst case does, the attack that ignores the auxiliary heads is being fooled
# by the argmax mask (notebook 03's pitfall), and the warnings printed under the lines name the attack that
# found the extra errors. Whether CAS helps at the paper's scale (CIFAR-10, ResNet-18) is what the `gpu`
# profile measures — with these same columns. Your numbers may differ by a point or two on another machine.

# %% [markdown]
# ## 4 · On a GPU
#
# Switch `PROFILE` to `"gpu"` (or start Jupyter with `CAS_EDU_PROFILE=gpu`, and `CAS_EDU_DATA` pointing
# at a folder with CIFAR-10; this notebook never downloads). Nothing else changes: `DEVICE = "auto"` picks
# the GPU, the same library calls train ResNet-18 with the official settings and run the full evaluation.
# The cost is in the tens of GPU-hours for all six runs, so train them with the printed commands first
# (`--resume` continues after an interruption); if memory runs out, lower `--batch-size`.
# Reported elsewhere — a later paper's reproduction table, **source not re-verified** — for ResNet-18 on
# CIFAR-10 (natural / PGD-20, %): AT 84.5 / 44.3,
# AT+CAS 85.9 / 50.6, TRADES 79.6 / 52.3, TRADES+CAS 83.1 / 56.6, MART 78.9 / 51.6, MART+CAS 86.4 / 54.3 —
# measured with the official attacks, without a black-box or AutoAttack check; your `worst case` column
# is the number to compare.
#
# ## 5 · Exercises
#
# ### Exercise 1 — the effect of CAS in one number per method
# Write `my_cas_gains(reports)` returning, for each method label (`"AT"`, `"TRADES"`, `"MART"`), the
# worst-case accuracy with CAS minus without, in percentage points (`pipeline.worst_case(report)` gives a
# report's worst case as a fraction). The checker compares with the table.

# %%
def my_cas_gains(reports):
    # your code here: pair each run with its "+cas" twin
    return {}


exercises.check_cas_gains(my_cas_gains, reports);


# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution: worst case with CAS minus without, in points, keyed by the method's label.
def my_cas_gains(reports):
    gains = {}
    for name, report in reports.items():
        if not name.endswith("+cas") and name + "+cas" in reports:
            with_cas = pipeline.worst_case(reports[name + "+cas"])
            gains[pipeline.display_name(name)] = round(100 * (with_cas - pipeline.worst_case(report)), 1)
    return gains


exercises.check_cas_gains(my_cas_gains, reports);

# %% [markdown]
# ### Exercise 2 — main head vs worst case
# Compare the `PGD-20 main head` and `worst case` columns of the CAS models with those of the models
# without CAS. For which models is the gap largest, and what does that tell you about citing main-head
# numbers for CAS?

# %% [markdown] jupyter={"source_hidden": true} tags=["solution"]
# **Solution.** Without CAS the main-head PGD-20 is the model's own white-box attack and usually close to the
# worst case. With CAS the main-head attack cannot see the argmax that picks the mask, so it tends to
# overstate robustness; the gap between the two columns is the size of that overstatement. Quote the worst
# case (or at least the adaptive attack *and* a black-box check), never the main-head number alone.

# %% [markdown]
# ### Exercise 3 — more training
# The `cpu` profile trains only 6 epochs. Set `EPOCHS = 12` in the config cell and re-run the notebook
# (about twice as long). Do natural accuracy, worst-case accuracy and the CAS gains change? Which of the
# changes are larger than the ±5-point sampling noise of 200 test images?

# %% [markdown] jupyter={"source_hidden": true} tags=["solution"]
# **Solution.** Longer training mostly raises robust accuracy for all six models; whether the *differences*
# between a method and its CAS twin grow is exactly what the exercise asks you to measure — compare
# `pipeline.cas_gains(reports)` before and after. With 200 test images, a difference of a few points is
# within noise; on the `gpu` profile (1,000 images) the noise shrinks to about ±3 points.
