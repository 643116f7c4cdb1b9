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
# # 02 · Channel activation statistics: what adversarial examples switch on
#
# The CAS paper (Bai et al., ICLR 2021) starts from two observations about the channels of a network's last
# convolutional layer, comparing natural images with adversarial ones:
#
# 1. **magnitude** — adversarial examples activate channels with *larger* values (paper, Figure 1);
# 2. **uniformity** — adversarial examples activate channels *more uniformly*: channels that natural images of a class
#    leave quiet light up (paper, Figure 2).
#
# The paper finds that adversarial training (AT) removes most of (1) but not (2), and Channel-wise Activation
# Suppressing (CAS, notebook 03) targets (2). Here we compute the paper's own two quantities for a **standard (STD)**
# and an **adversarially trained (AT)** ResNet-18 at its `layer4`, as the paper does, put intervals on them, and read
# honestly what our data shows — including where it differs from the paper. On the way we measure why notebook 01's
# small CNN is the wrong place to look for observation 2.

# %% [markdown] tags=["launch"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/cas_edu/blob/main/notebooks/student/02_channel_activation_statistics.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/cas_edu/main?urlpath=lab/tree/notebooks/student/02_channel_activation_statistics.ipynb)
#
# Run it online: Colab gives a free GPU (the set-up cell before the configuration installs cas_edu
# there), Binder JupyterLab on a CPU. Both badges open the student edition of this notebook.

# %% [markdown]
# ## Configuration
#
# `PROFILE` comes from the environment variable `CAS_EDU_PROFILE`; the library's
# `pipeline.observation_configs(PROFILE)` holds each profile's dataset, model, ε and training runs:
#
# * **`cpu`** (the default, what the tests run): 8×8 digits and a ResNet-18 at half width (`resnet18_w32`: 32 stem
#   channels, so `layer4` has 256), trained for 12 epochs; AT uses a short 3-step PGD; PGD ε = 0.1; all 359 test
#   digits. It takes a minute or two on a laptop CPU.
# * **`gpu`**: the paper's setting, so that Figures 1-2 come out as the paper computed them — CIFAR-10 (from the
#   folder in `CAS_EDU_DATA`; nothing is downloaded), ResNet-18 with its 512 `layer4` channels, the official
#   training schedules, ε = 8/255, and the whole test split, whose class 0 holds the 1,000 images of the paper's
#   figures (attacked, as there, with PGD-20). The AT model is notebook 04's run (reused when 04 trained it); the
#   standard model is trained here. Both take GPU-hours: train them first with the commands printed in section 1
#   (`--resume` continues an interrupted run), then run this notebook.
# * **`colab`**: the `cpu` settings and runs, on a hosted notebook (the paper's setting needs the `gpu` profile's
#   GPU-hours, more than a free Colab session gives).
#
# Any other profile name stops the configuration cell (the one after the Colab set-up cell) with an error that names the valid ones.

# %% tags=["setup"]
# Set-up for Google Colab, written by `make links`: there it installs cas_edu when it is missing, picks the
# colab profile, turns widgets on and fetches the data this notebook needs. Anywhere else it does nothing.
import importlib
import importlib.util
import subprocess
import sys

if "google.colab" in sys.modules:
    if importlib.util.find_spec("cas_edu") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                        "cas_edu @ git+https://github.com/OWNER/cas_edu@main"], check=True)
        importlib.invalidate_caches()
    from cas_edu import hosted

    hosted.set_up_colab()

# %%
import os

from cas_edu import pipeline, presets

PROFILE = presets.get_profile(os.environ.get("CAS_EDU_PROFILE", "cpu")).name   # cpu (default), colab or gpu; ValueError for others
DEVICE = "auto"                                      # "auto": CUDA, then MPS, then CPU
SEED = 0
DATA_ROOT = os.environ.get("CAS_EDU_DATA")           # folder holding CIFAR-10 (gpu); digits need no files
RUNS_DIR = "runs"                                    # trained runs are saved (and reused) under runs/<profile>/
CONFIGS = pipeline.observation_configs(PROFILE, seed=SEED, device=DEVICE)  # standard, pgd_at, pgd_at+cas
DATASET = CONFIGS["standard"].dataset                # digits (cpu) or cifar10 (gpu)
MODEL = CONFIGS["standard"].model                    # resnet18_w32 (cpu) or resnet18 (gpu)
EPS = CONFIGS["pgd_at"].eps                          # L∞ budget of the attacks and of AT: 0.1 or 8/255
N_EVAL = None                                        # test images analysed (None = all: 359 digits or 10,000)
CLASS_ID = 0                                         # the paper's figures show class 0
PGD_STEPS = 20                                       # PGD-20, the attack of the paper's figures

# %%
import plotly.graph_objects as go
import torch
from IPython.display import Markdown, display

from cas_edu import activations, data, evaluation, exercises, observations, plots, tables, training, widgets
from cas_edu.runtime import resolve_device, seed_everything

seed_everything(SEED)
device = resolve_device(DEVICE)
ds = data.load(DATASET, root=DATA_ROOT)
x_eval, y_eval = pipeline.eval_examples(ds, N_EVAL)
print("running on", device.type)

# %%
# NBVAL_CHECK_OUTPUT
print(f"profile {PROFILE}: {DATASET}, {MODEL}, ε = {EPS:.4g}, PGD-{PGD_STEPS}")
print("images analysed:", tuple(x_eval.shape))
print("examples per class:", torch.bincount(y_eval, minlength=len(ds.classes)).tolist())

# %% [markdown]
# ## 1 · Two models: standard and adversarially trained
#
# **Standard training** minimises the cross-entropy on clean images. **Adversarial training** (Madry et al.) replaces
# each training batch by PGD adversarial examples crafted on the current model,
#
# $$\min_\theta \; \mathbb{E}_{(x, y)} \Big[ \max_{\|\delta\|_\infty \le \varepsilon} \mathcal{L}\big(f_\theta(x + \delta), y\big) \Big],$$
#
# so each epoch costs several times as much as a standard one. Both runs are saved under `runs/` and reused next time
# (the gpu profile's AT run is notebook 04's, reused when 04 trained it). Each run is also a shell command: the next
# cell prints them, so you can train them outside the notebook — from the `notebooks/` folder (from the repository
# root, put `notebooks/` in front of the `--out` folder); for CIFAR-10, set `CAS_EDU_DATA` or add `--data-root`.

# %%
# NBVAL_CHECK_OUTPUT
RUNS = {"STD": "standard", "AT": "pgd_at"}   # label in the figures -> run of pipeline.observation_configs
run_dirs = {label: pipeline.observation_run_dir(RUNS_DIR, PROFILE, name) for label, name in RUNS.items()}
for label, name in RUNS.items():
    print(f"{label}: {pipeline.cli_command(CONFIGS[name], run_dirs[label])}")

# %%
models = {}
for label, name in RUNS.items():
    models[label], _ = training.train_or_load(CONFIGS[name], run_dirs[label], progress=True, dataset=ds)
    models[label].eval()
natural = {label: evaluation.accuracy(model, x_eval, y_eval) for label, model in models.items()}  # per image
for label, correct in natural.items():
    print(f"{label}: natural test accuracy {evaluation.wilson_interval(correct)}")
print(f"AT − STD on the same images: {evaluation.paired_interval(natural['AT'], natural['STD'])}")

# %% [markdown]
# Before looking inside, check that the two models really differ in robustness: accuracy under PGD-10 as ε grows
# (notebook 01 explains the curve). If adversarial training worked, the AT curve lies well above the STD curve around
# its training budget ε, perhaps at some cost in natural accuracy (the previous cell: each accuracy with its 95 %
# Wilson interval, and their difference with a paired one, as in notebook 01). The lines printed above the figure
# compare the two models at ε on the same images in the same way, and say whether the difference is resolved; the
# error bars are each point's Wilson interval. The curve draws its own random starts for PGD, so its points at ε can
# differ a little from the printed line.

# %%
eps_grid = [0.0, EPS / 2, EPS, 2 * EPS]
curves = {label: evaluation.robustness_curve(m, x_eval, y_eval, eps_grid, attacks=("pgd",), steps=10, seed=SEED)
          for label, m in models.items()}
robust = {label: evaluation.accuracy(m, x_eval, y_eval, "pgd", eps=EPS, steps=10, seed=SEED) for label, m in models.items()}
at_minus_std = evaluation.paired_interval(robust["AT"], robust["STD"])   # both models attacked on the same images
print(f"PGD-10 at ε = {EPS:.3g} on the same {len(x_eval)} images: "
      + ", ".join(f"{label} {evaluation.wilson_interval(correct).format(show_n=False)}"
                  for label, correct in robust.items())
      + f"; AT − STD {at_minus_std}")
print("-> " + ("AT is clearly more robust than STD at its training budget (the interval lies above 0)"
               if at_minus_std.low > 0 else
               "AT is less robust than STD here (the interval lies below 0)" if at_minus_std.high < 0 else
               "no resolved difference: at its training budget this AT model is not clearly more robust than STD"))
plots.accuracy_vs_eps_figure(curves, title=f"STD vs AT ({MODEL}): accuracy vs ε on {len(x_eval)} test images")

# %% [markdown]
# ## 2 · Why not notebook 01's small CNN?
#
# Observation 2 is about channels that natural images of a class leave **quiet** and that the attack switches on. The
# paper calls a channel *active* in an image when its value exceeds 1 % of that image's largest channel. So a first
# question about any layer is: how many of its channels are active in a typical natural image? We call that share the
# layer's **saturation** (`activations.saturation`). When it is close to 1, almost every channel is active in almost
# every image: no channel can be quiet, and the paper's Figure 2 cannot show observation 2 whatever the attack does.
#
# Notebook 01's small CNN ends with `block3` (128 channels after BatchNorm, ReLU and a max-pool); the model of this
# notebook ends with ResNet-18's `layer4` (the paper's layer). We measure both on natural test images, at the paper's
# 1 % and at two stricter thresholds, and also count the channels that are quiet for a class (active in fewer than
# 20 % of its images), averaged over the classes. The small CNN is notebook 01's run (same configuration, same
# folder: reused when you ran 01 first); it is trained on digits in every profile.

# %%
small_config = presets.make_config("digits", method="standard", epochs=6, seed=SEED, device=DEVICE)
digits = ds if DATASET == "digits" else data.load("digits")
small_cnn, _ = training.train_or_load(small_config, "runs/cpu/digits_standard", progress=True, dataset=digits)
small_cnn.eval()

THRESHOLDS = observations.TABLE_THRESHOLDS   # 1 % (the paper's), 10 %, 20 %
layers = {  # label -> (natural activations, labels)
    f"small CNN {small_cnn.resolve_layer(None)} (digits)": (activations.channel_activations(small_cnn, digits.test.x),
                                                          digits.test.y),
    f"STD {MODEL} {models['STD'].resolve_layer(None)} ({DATASET})": (
        activations.channel_activations(models["STD"], x_eval), y_eval),
}


def quiet_per_class(acts, y, threshold):
    """Channels quiet for a class (active in < 20 % of its natural images), averaged over the classes."""
    return sum(int(observations.quiet_channels(acts[y == k], threshold).sum()) for k in y.unique()) / len(y.unique())


headers = ["layer", "channels"] + [f"saturation @{100 * t:g}%" for t in THRESHOLDS] + [
    f"quiet/class @{100 * t:g}%" for t in THRESHOLDS]
rows = [[label, str(acts.shape[1])] + [f"{activations.saturation(acts, t):.2f}" for t in THRESHOLDS]
        + [f"{quiet_per_class(acts, y, t):.1f}" for t in THRESHOLDS] for label, (acts, y) in layers.items()]
display(Markdown(tables.markdown_table(headers, rows)))
for label, (acts, y) in layers.items():
    share = activations.saturation(acts, 0.01)
    verdict = ("saturated: no channel can be quiet, so Figure 2 cannot show observation 2"
               if activations.is_saturated(acts, 0.01) else "not saturated: there is room for quiet channels")
    print(f"{label}: a natural image activates {share:.0%} of the channels at 1 %, and a class leaves "
          f"{quiet_per_class(acts, y, 0.01):.1f} of its {acts.shape[1]} channels quiet on average — {verdict}.")

# %% [markdown]
# The same contrast as a picture: for every channel, the share of natural images that activate it at 1 %, channels
# sorted from the most to the least often active. The x axis is the channel's rank as a share of the layer, so the two
# layers (128 and 256 or 512 channels) sit on one axis. A curve that stays near 1 all the way is a saturated layer; a
# curve that falls well below 1 on the right has channels that many images leave off. The curve pools all classes, so
# it need not reach 0 even when each class leaves many channels quiet (a channel quiet for one class may be busy for
# another): the *quiet/class* columns of the table above count those, class by class.

# %%
fig = go.Figure()
for i, (label, (acts, _)) in enumerate(layers.items()):
    rate = activations.activated(acts, 0.01).float().mean(dim=0).sort(descending=True).values
    fig.add_trace(go.Scatter(x=(torch.arange(len(rate)) + 0.5) / len(rate), y=rate, mode="lines", name=label,
                             line=dict(color=plots.RUN_COLORS[i], width=2)))
fig.update_layout(title="How often each channel is active in natural images (> 1 % of the image's max)",
                  xaxis_title="channel rank (share of the layer's channels, most often active first)",
                  yaxis_title="share of natural images activating the channel", yaxis_range=[0, 1.05],
                  legend_title="layer", height=420, width=900)
fig

# %% [markdown]
# **The lesson.** Read the two lines printed under the table, then the curves. A *saturated* layer — almost every
# channel active in almost every image at 1 %, almost no channel quiet for a class — is *dense*: Figure 2's count is
# then nearly flat, and there is no quiet channel for an attack to wake, so observation 2 is invisible there by
# construction, neither confirmed nor refuted. (In the small CNN a max-pool followed by a spatial mean is rarely below
# 1 % of the image's strongest channel.) A layer where each image activates only part of the channels and each class
# leaves many of them quiet has room for observation 2 to show, or not. The printed verdicts say which of the two
# layers is which in this run; the rest of this notebook (and notebook 03) probes the ResNet's `layer4`, the paper's
# layer. A stricter threshold (10 %, 20 %) never raises the saturation of a layer, but then we no longer measure the
# paper's quantity.

# %% [markdown]
# ## 3 · Capturing the penultimate channel activations
#
# Every cas_edu model has `forward_details(x)`, which returns — besides the logits — the activations of each named
# layer. Like the paper's scripts, `activations.channel_activations` takes `layer4`'s output (after the block's final
# ReLU; on 8×8 digits a 1×1 map, on CIFAR-10 a 4×4 map) and averages each channel over space, one vector per image:
#
# $$a_{n,c} = \frac{1}{HW} \sum_{h,w} f_{n,c,h,w} \;\ge 0 \qquad (n = \text{image}, \; c = \text{channel}).$$

# %%
# NBVAL_CHECK_OUTPUT
acts = activations.channel_activations(models["STD"], x_eval)
print("activations:", tuple(acts.shape), "| layer:", models["STD"].resolve_layer(None),
      "| all ≥ 0:", bool((acts >= 0).all()))

# %% [markdown]
# ## 4 · The paper's Figures 1 and 2
#
# **Activated.** Channel $c$ is *activated* by image $n$ when its value exceeds 1 % of that image's largest channel:
# $\;\mathbb{1}[a_{n,c} > 0.01 \cdot \max_{c'} a_{n,c'}]$.
#
# **Figure 2 — activation count.** For each channel, the number of images that activate it,
# $\;\text{count}_c = \sum_n \mathbb{1}[a_{n,c} > 0.01 \max_{c'} a_{n,c'}]$. Channels are sorted by their *natural*
# count, and the adversarial counts are drawn in the same channel order — so a channel that natural images leave
# quiet but adversarial images switch on shows up as an adversarial bar rising above a low natural bar on the right.
#
# **Figure 1 — magnitude.** For each channel, the sum of its values over all images divided by its activated count,
# $\;\text{mag}_c = \sum_n a_{n,c} / \text{count}_c$ (0 for a channel no image activates). The natural and the
# adversarial curves are *each* sorted in descending order.
#
# The paper uses 1,000 test images of class 0 and PGD-20 at ε = 8/255 on the same model (step 0.003, random start;
# on CAS models the adaptive objective). `activations.compare_activations` does exactly this — the official step
# scaled to our ε (ε · 0.003 / (8/255)) — and computes both figures' curves. (The official script averages batch
# results as a running `(old + new) / 2`; we compute the true mean.) On digits class 0 has only a few dozen test
# images, so we look at class `CLASS_ID` *and* at all classes together.
#
# We will also vary ε, the class, the model and the threshold interactively (section 7), so we build the
# `widgets.ActivationExplorer` now: it runs PGD on all the images once per model and ε, when that (model, ε) is first
# needed, and keeps the activations; a class or a threshold is then only a recount. The figures below read from the
# same cache (the two models at ε = `EPS`).

# %%
explorer = widgets.ActivationExplorer(models, x_eval, y_eval, ds.classes, eps=EPS, eps_max=2 * EPS, eps_step=EPS / 2,
                                      class_id=CLASS_ID, steps=PGD_STEPS, seed=SEED,
                                      precompute=False)   # PGD per (model, ε) on first use, not for the whole grid
per_class = {label: explorer.comparison(label, EPS, class_id=CLASS_ID, threshold=0.01) for label in models}
all_classes = {label: explorer.comparison(label, EPS, threshold=0.01) for label in models}

# %%
# NBVAL_CHECK_OUTPUT
print(f"class {CLASS_ID}: {per_class['STD'].n_examples} images; all classes: {all_classes['STD'].n_examples} images; "
      f"{per_class['STD'].natural.shape[1]} channels")

# %% [markdown]
# ### Figure 1 — magnitude
#
# If observation 1 holds, the red (adversarial) curve lies above the blue (natural) one, at least for the largest
# channels on the left.

# %%
plots.magnitude_figure(per_class, title=f"Figure 1 (class {CLASS_ID}): channel magnitude, natural vs adversarial")

# %%
plots.magnitude_figure(all_classes, title="Figure 1 (all classes): channel magnitude, natural vs adversarial")

# %% [markdown]
# ### Figure 2 — activation counts
#
# If observation 2 holds, red bars rise above low blue bars on the right: channels that natural images of the class
# rarely use, switched on by the attack. Over all classes together this tail is diluted — a channel quiet for one
# class may be busy for another — so the per-class figure is the one to read.

# %%
plots.count_figure(per_class, title=f"Figure 2 (class {CLASS_ID}): examples activating each channel")

# %%
plots.count_figure(all_classes, title="Figure 2 (all classes): examples activating each channel")

# %% [markdown]
# ## 5 · The observations in numbers, with intervals
#
# Figures invite over-reading, so `observations.measure_observations` turns each observation into a number with a
# 95 % bootstrap interval (images resampled within their class):
#
# * **Observation 1** — the *magnitude ratio*, mean adversarial activation ÷ mean natural activation. It is shown
#   when the whole interval lies above 1.
# * **Observation 2** — for each class, the channels its natural images leave **quiet** (active in fewer than 20 %
#   of them) that more than half of its adversarial images activate: the **woken** channels, averaged over classes.
#   But any perturbation moves activations a little, so zero is the wrong baseline. The null is **sign noise**: every
#   pixel moved by a random ±ε, the same budget as the attack but no aim. Observation 2 is shown when the attack
#   wakes more channels than the noise does: the interval of the paired difference (attack − noise) lies above 0.
# * The **channel entropy** (how evenly a class's activation mass spreads over the channels, 1 = uniform) is a
#   threshold-free view of the same uniformity; and each threshold's **saturation** says whether the count can show
#   quiet channels at all (section 2).
#
# The attack is PGD-`PGD_STEPS` as in the figures, seeded; the sign noise uses the same seed.

# %%
measured = {label: observations.measure_observations(m, x_eval, y_eval, EPS, steps=PGD_STEPS, seed=SEED)
            for label, m in models.items()}
display(Markdown(observations.observation_table(list(measured.items()))))


# %% [markdown]
# The verdicts below are computed from the same measurements as the table, not written by hand: read them next to the
# numbers. Observation 2's verdict rests on the *excess* (attack − noise) interval, which the table does not show and
# each line prints.

# %%
def verdicts(label, obs):
    """Plain sentences for one model's observations, generated from the intervals."""
    ratio = obs.magnitude_ratio
    lines = [f"{label}: adversarial ÷ natural magnitude {ratio.format(3)} — observation 1 "
             + ("is shown (the interval lies above 1)." if obs.observation_1 else
                "is not shown (the interval does not lie above 1).")]
    for row in obs.rows:
        excess = row.woken_excess
        lines.append(f"  at {100 * row.threshold:g} %: the attack wakes {row.woken_attack.format(1)} quiet channels "
                     f"per class, sign noise {row.woken_noise.format(1)}; excess {excess.format(1)} — observation 2 "
                     + ("is shown." if obs.observation_2(row.threshold) else "is not shown."))
    lines.append(f"  channel entropy natural {obs.natural_entropy.format()} → adversarial "
                 f"{obs.adversarial_entropy.format()}: adversarial activations spread "
                 + ("more" if obs.adversarial_entropy.value > obs.natural_entropy.value else "less")
                 + " evenly over the channels.")
    return "\n".join(lines)


for label, obs in measured.items():
    print(verdicts(label, obs))

# %% [markdown]
# ## 6 · What AT does here — and what the paper says
#
# The paper reports, for ResNet-18 on CIFAR-10, that AT *removes* observation 1 (adversarial magnitudes no longer
# exceed natural ones) but *keeps* observation 2 (adversarial examples still activate channels uniformly), which is
# the gap CAS is built to close. The next cell compares our STD and AT models on both observations, from the same
# intervals, and says which of the paper's two claims our data supports. (Two intervals that do not overlap are a
# clear difference; overlapping ones are not resolved by this sample.)

# %%
std, at = measured["STD"], measured["AT"]


def compare(what, a, b, digits):
    """Whether AT's estimate b is clearly below / above STD's a (intervals that do not overlap) or not resolved."""
    numbers = f"AT {b.format(digits)}, STD {a.format(digits)}"
    if b.high < a.low:
        return f"AT's {what} is clearly lower than STD's ({numbers})"
    if b.low > a.high:
        return f"AT's {what} is clearly higher than STD's ({numbers})"
    return f"AT's {what} is not clearly different from STD's ({numbers}; the intervals overlap)"


print("Observation 1:", compare("magnitude ratio", std.magnitude_ratio, at.magnitude_ratio, 3) + ".")
paper_pattern = std.observation_1 and not at.observation_1
lowered = at.magnitude_ratio.high < std.magnitude_ratio.low
print("  Paper: AT removes observation 1. Here: STD " + ("shows" if std.observation_1 else "does not show")
      + " it, AT " + ("shows" if at.observation_1 else "does not show") + " it — "
      + ("as in the paper." if paper_pattern and lowered else
         "the paper's pattern, but the difference between the two models is not resolved by this sample."
         if paper_pattern else "not the paper's pattern."))
for t in THRESHOLDS:
    print(f"Observation 2 at {100 * t:g} %:", compare("excess of woken channels per class", std.row(t).woken_excess,
                                                   at.row(t).woken_excess, 1) + ".")
kept = at.observation_2(0.01)
reduced = at.row(0.01).woken_excess.high < std.row(0.01).woken_excess.low
print("  Paper: AT keeps observation 2. Here, at the paper's 1 %: AT "
      + ("still shows it" if kept else "no longer shows it")
      + (", but clearly weaker than STD" if kept and reduced else "") + " — "
      + ("as in the paper." if kept and not reduced else
         "AT removes part of observation 2 here, unlike the paper." if kept else
         "AT removes observation 2 here, unlike the paper."))

# %% [markdown]
# **How to read this.** The printed sentences are what this run's data supports. Another seed — or the same seed on
# another machine, since training is not bit-for-bit reproducible across machines and thread counts — moves the
# numbers, and the intervals say by how much the sample alone could (they do not cover a second training run). On
# the cpu profile our model is a half-width ResNet-18 trained briefly on 8×8 digits with a short training attack
# (section 1 prints its settings), not the paper's ResNet-18 trained for 200 epochs on CIFAR-10: where the verdicts
# differ from the paper, that is a finding about this setting, not a refutation of the paper — and where they agree,
# not a confirmation either. And check section 1's verdict first: if it found no resolved robustness difference
# between AT and STD, this AT model has not learned much robustness, and comparing its channels with STD's says
# little about what adversarial training does. Read the comparison lines, too, not only the "shows it" words: a model
# *shows* an observation when its own interval clears the null, which is weaker than a resolved difference between
# two models — one model can show it and the other not while their intervals still overlap. The gpu profile computes
# the same table in the paper's own setting.
# Notebook 03 adds CAS to the AT model and measures whether it wakes fewer channels.

# %% [markdown]
# ## 7 · Interactive: ε, class, model and threshold
#
# Move **ε** (PGD-`PGD_STEPS` on the same images, seeded), pick a **class**, toggle **STD / AT**, and move the
# **threshold t** that decides when a channel counts as active. Both figures and the summary update. The first visit
# to an ε runs PGD-`PGD_STEPS` for the model shown on all the images (a few seconds on a CPU); after that the
# (model, ε) is cached, and changing the class or the threshold only recounts.
#
# Try:
#
# * at ε = 0 the two curves coincide (nothing is attacked); as ε grows, read the *mean activation (adv ÷ nat)* line
#   of the summary for STD and for AT: does either rise above 1, and which moves more? (Section 5 measured the same
#   ratio at ε = `EPS`, with an interval; one class of a few dozen images is a small sample.)
# * compare the right-hand tail of Figure 2 between classes;
# * **move the threshold** from 1 % upwards and watch the saturation in the summary under the figure: the share of
#   channels a natural image activates falls, more channels become quiet, and the count can show more woken ones —
#   but it is then a different quantity from the paper's (section 2 measured the same for notebook 01's small CNN).

# %%
explorer.widget

# %% [markdown]
# For a reader without a running kernel (GitHub, nbviewer, the course site): a static picture of the explorer's
# initial view. Running the notebook, the explorer above is the one to use.

# %%
explorer.snapshot().show()

# %% [markdown]
# The widget's callback is the plain function `widgets.activation_view`; it returns the curves it draws:

# %%
# NBVAL_CHECK_OUTPUT
view = explorer.view()
print(sorted(view))
print("curve lengths:", len(view["natural_magnitudes"]), len(view["adversarial_counts"]),
      "| counts sorted by natural:", bool((view["natural_counts"][:-1] >= view["natural_counts"][1:]).all()))


# %% [markdown]
# ## Exercises
#
# As in notebook 01, each checker runs your function on fresh random activations and compares it with the library.
# Solutions are in the collapsed cells.
#
# ### Exercise 1 · The activation count of Figure 2
#
# Write `my_counts(acts)` that takes an N×C tensor of non-negative activations and returns, for each channel, the number
# of examples that activate it (value > 1 % of that example's largest channel). Hint: `acts.amax(dim=1, keepdim=True)`.

# %%
def my_counts(acts):
    # your code here
    raise NotImplementedError("count the examples that activate each channel")


exercises.check_activation_counts(my_counts);


# %% jupyter={"source_hidden": true} tags=["solution"]
# Worked solution
def my_counts(acts):
    activated = acts > 0.01 * acts.amax(dim=1, keepdim=True)   # N×C booleans, per-example threshold
    return activated.sum(dim=0)                                 # per channel, over examples


exercises.check_activation_counts(my_counts);


# %% [markdown]
# ### Exercise 2 · The magnitude of Figure 1
#
# Write `my_magnitudes(acts)` returning, per channel and in channel order, the sum of its values over all examples
# divided by its activated count — and 0 for a channel that no example activates (no NaN!).

# %%
def my_magnitudes(acts):
    # your code here
    raise NotImplementedError("sum over examples ÷ activated count")


exercises.check_channel_magnitudes(my_magnitudes);


# %% jupyter={"source_hidden": true} tags=["solution"]
# Worked solution
def my_magnitudes(acts):
    counts = (acts > 0.01 * acts.amax(dim=1, keepdim=True)).sum(dim=0)
    sums = acts.sum(dim=0)                                      # every example, sub-threshold values included
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.zeros_like(sums))


exercises.check_channel_magnitudes(my_magnitudes);

# %% [markdown]
# ### Exercise 3 · How much does the 1 % threshold decide?
#
# Recompute the all-classes activation counts of the STD model with `threshold=0.1` and `threshold=0.3`
# (`activations.activation_counts(acts, threshold)` on `all_classes["STD"].natural` and `.adversarial`), and the
# saturation (`activations.saturation`) at each. Do the same for the small CNN's activations
# (`layers` from section 2 holds them). How do saturation and the number of channels that adversarial images activate
# more often change? Is a conclusion that depends this much on a threshold a robust one?

# %% jupyter={"source_hidden": true} tags=["solution"]
# Worked solution
c = all_classes["STD"]
for threshold in (0.01, 0.1, 0.3):
    natural = activations.activation_counts(c.natural, threshold)
    adversarial = activations.activation_counts(c.adversarial, threshold)
    print(f"threshold {threshold:>4}: saturation {activations.saturation(c.natural, threshold):.2f}, "
          f"fraction activated adversarial {activations.fraction_activated(c.adversarial, threshold):.2f}; "
          f"channels activated more often by adversarial images: {int((adversarial > natural).sum())} of {len(natural)}")
small_acts = next(iter(layers.values()))[0]
print("small CNN saturation at 1 %, 10 %, 30 %:",
      [round(activations.saturation(small_acts, t), 2) for t in (0.01, 0.1, 0.3)])
# With a higher threshold fewer channels count as activated (the saturation falls), and the count of channels
# adversarial images activate more often moves with it (see the printed lines): differences between natural and
# adversarial images can appear or vanish. The paper's 1 % is a choice; a claim about "uniformity" is strongest when it
# holds across thresholds (as the table of section 5 checks) or with a threshold-free measure such as the channel
# entropy.

# %% [markdown]
# ### Exercise 4 · Why would AT remove observation 1 but not observation 2?
#
# The paper finds exactly that on CIFAR-10. Think about what adversarial training optimises, then read the answer
# below — and about why our small digits setting may not follow the paper (section 6).

# %% [markdown] jupyter={"source_hidden": true} tags=["solution"]
# *Worked answer:* AT trains the network to give the right answer on PGD examples, so it learns features whose
# *size* an attacker cannot easily inflate: large adversarial magnitudes would move the logits and are penalised by
# the loss. Nothing in the loss, however, asks *which* channels a class may use — a misclassified adversarial example
# can still light up channels that belong to other classes, as long as the final decision survives. CAS adds exactly
# that missing pressure: an auxiliary classifier per CAS layer whose weights for the true class re-weight (suppress) the
# channels that class does not need. Notebook 03 builds it.
#
# On 8×8 digits the picture can differ: the attack has only 64 pixels to work with and AT, even with a short attack,
# may make the features stable enough that the attack wakes few quiet channels — and an adversarial example
# that does not change the features much wakes none. Whether AT keeps observation 2 is therefore a question about the
# data and the model, which is why section 6 answers it from the measured intervals rather than from the paper.

# %% [markdown]
# ## References
#
# * Y. Bai, Y. Zeng, Y. Jiang, S.-T. Xia, X. Ma, Y. Wang. *Improving Adversarial Robustness via Channel-wise
#   Activation Suppressing.* ICLR 2021. arXiv:2103.08307 (Figures 1 and 2: the two observations). Official code:
#   github.com/bymavis/CAS_ICLR2021 (the ActivationAnalysis scripts behind the figures).
# * A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu. *Towards Deep Learning Models Resistant to Adversarial
#   Attacks.* ICLR 2018 (PGD, adversarial training).
# * K. He, X. Zhang, S. Ren, J. Sun. *Deep Residual Learning for Image Recognition.* CVPR 2016 (ResNet-18).
# * H. Zhang, Y. Yu, J. Jiao, E. P. Xing, L. El Ghaoui, M. I. Jordan. *Theoretically Principled Trade-off between
#   Robustness and Accuracy.* ICML 2019 (TRADES).
# * Y. Wang, D. Zou, J. Yi, J. Bailey, X. Ma, Q. Gu. *Improving Adversarial Robustness Requires Revisiting
#   Misclassified Examples.* ICLR 2020 (MART).
# * A. Athalye, N. Carlini, D. Wagner. *Obfuscated Gradients Give a False Sense of Security: Circumventing Defenses to
#   Adversarial Examples.* ICML 2018.
# * N. Carlini, A. Athalye, N. Papernot, W. Brendel, J. Rauber, D. Tsipras, I. Goodfellow, A. Madry, A. Kurakin.
#   *On Evaluating Adversarial Robustness.* arXiv:1902.06705, 2019.
# * F. Tramèr, N. Carlini, W. Brendel, A. Madry. *On Adaptive Attacks to Adversarial Example Defenses.* NeurIPS 2020.
# * F. Croce, M. Hein. *Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free
#   Attacks.* ICML 2020 (AutoAttack).
