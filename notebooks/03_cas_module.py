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
# # 03 · The CAS module, by hand — and how to evaluate it honestly
#
# In notebook 02 we measured the paper's two observations about the channels of ResNet-18's `layer4`:
# adversarial examples may activate channels **more strongly** (observation 1), and they may **wake channels** that
# natural images of a class leave quiet (observation 2). The paper (Bai et al., ICLR 2021) reports that adversarial
# training (AT) removes most of the first but not the second, and proposes *Channel-wise Activation Suppressing*
# (CAS) against the second.
#
# In this notebook we
#
# 1. build the CAS module step by step by hand — pooling → auxiliary classifier → mask from the class's
#    weight row → suppression → loss — and check every step equals the library's `cas_edu.cas.CASModule`;
# 2. train (or reuse) the same ResNet with AT and with AT+CAS;
# 3. measure the two observations for both, with intervals, and ask: does CAS reduce the channels the attack wakes?
# 4. look at what the CAS mask does to natural and adversarial activations, channel by channel;
# 5. learn why measuring the robustness of a CAS model needs care (**gradient masking**): first on a toy defence that
#    masks gradients on purpose, then on AT+CAS, attacked several ways — including through its argmax mask;
# 6. finish with exercises; your code is checked against the library.

# %% [markdown] tags=["launch"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/cas_edu/blob/main/notebooks/student/03_cas_module.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/cas_edu/main?urlpath=lab/tree/notebooks/student/03_cas_module.ipynb)
#
# Run it online: Colab gives a free GPU (the set-up cell before the configuration installs cas_edu
# there), Binder JupyterLab on a CPU. Both badges open the student edition of this notebook.

# %% [markdown]
# ## Configuration
#
# `PROFILE` comes from the environment variable `CAS_EDU_PROFILE`; `pipeline.observation_configs(PROFILE)` holds
# each profile's dataset, model, ε and training runs — the same runs notebook 02 trains, in the same folders, so
# whichever notebook runs first trains them and the other reuses them:
#
# * **`cpu`** (the default, what the tests run): 8×8 digits and ResNet-18 at half width (`resnet18_w32`: 32 stem
#   channels, so `layer4` has 256), 12 epochs with a 3-step PGD training attack, ε = 0.1. The evaluation lesson
#   uses a reduced budget (below). Sized for a laptop CPU: a two-minute budget, training included.
# * **`gpu`**: the paper's setting — CIFAR-10 (from the folder in `CAS_EDU_DATA`; nothing is downloaded),
#   ResNet-18 with 512 channels in `layer4`, the official AT schedule, ε = 8/255. The AT and AT+CAS runs are
#   notebook 04's (`runs/gpu/pgd_at`, `runs/gpu/pgd_at+cas`): train them there, or with the commands printed in
#   section 2, before running this profile. The evaluation adds AutoAttack and the straight-through PGD-100 × 5
#   (section 5.2).
# * **`colab`**: the `cpu` settings and runs, on a hosted notebook.
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

from cas_edu import presets

PROFILE = presets.get_profile(os.environ.get("CAS_EDU_PROFILE", "cpu")).name   # cpu (default), colab or gpu; ValueError for others
DATA_ROOT = os.environ.get("CAS_EDU_DATA")          # folder holding CIFAR-10 (gpu); digits need no files
DEVICE = "auto"             # CUDA, then MPS, then CPU
SEED = 0
RUNS_DIR = "runs"           # runs are saved (and reused) under runs/<profile>/..., shared with notebooks 02 and 04
CLASS_ID = 0                # the class the figures follow (the paper's figures show class 0)
N_OBSERVE = None            # test images for the observation table (None = all: 359 digits or 10,000 CIFAR-10)
# The evaluation lesson (section 5): white-box attacks on N_EVAL test images; the costly checks on a
# class-balanced N_COSTLY of them, Square with SQUARE_QUERIES queries (AutoAttack's default is 5,000).
N_EVAL = 10_000 if PROFILE == "gpu" else 100
N_COSTLY = 1_000 if PROFILE == "gpu" else 50
SQUARE_QUERIES = 5_000 if PROFILE == "gpu" else 500
EVAL_ATTACKS = (("natural", "fgsm", "pgd20", "cw", "square", "autoattack", "pgd-st") if PROFILE == "gpu"
                else ("natural", "fgsm", "pgd20", "cw", "square"))

# %%
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

from cas_edu import activations, cas, data, evaluation, exercises, gradient_masking, models, observations, pipeline, \
    plots, presets, runtime, tables, training, widgets

profile = presets.get_profile(PROFILE)
configs = pipeline.observation_configs(profile, seed=SEED, device=DEVICE)   # standard, pgd_at, pgd_at+cas
config_at, config_cas = configs["pgd_at"], configs["pgd_at+cas"]
DATASET, MODEL, EPS = config_at.dataset, config_at.model, config_at.eps   # digits / resnet18_w32 / 0.1 on cpu
device = runtime.resolve_device(DEVICE)
runtime.seed_everything(SEED)
ds = data.load(DATASET, root=DATA_ROOT)
print(f"device: {device.type}")
print(f"profile {profile.name}: {MODEL} on {ds.name}, ε = {EPS:.4g}; "
      f"train {len(ds.train)}, val {len(ds.val)}, test {len(ds.test)} images of shape {ds.input_shape}")

# %% [markdown]
# ## 1 · The CAS module, step by step
#
# In ResNet-18, as in the official code, CAS sits after **both** blocks of `layer4` (`layer4_0` and `layer4_1`,
# so $S = 2$ modules), on each block's output after its final ReLU: a feature map
# $f \in \mathbb{R}^{N\times C\times H\times W}$ (on 8×8 digits `layer4` is 1×1, on CIFAR-10 4×4). The second
# module sees the first one's *masked* output. We take an untrained model (weights fixed by the seed) and eight test
# images, and rebuild by hand what **the first module** does with its $f$; the second does the same with its own
# weights.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(SEED)
model = models.build(MODEL, num_classes=ds.num_classes, in_channels=ds.input_shape[0], cas=True).eval()
CAS_LAYER, NEXT_LAYER = model.cas_layers       # layer4_0 (rebuilt by hand below) and layer4_1
module = model.cas[CAS_LAYER]
xb, yb = ds.test.x[:8], ds.test.y[:8]
with torch.no_grad():
    f = model.forward_details(xb).activations[CAS_LAYER]   # the pre-mask feature map of the first CAS module
print(f"CAS modules: {model.cas_layers} (S = {len(model.cas_layers)}); we rebuild the first, {CAS_LAYER}")
print("feature map f:", tuple(f.shape), "(N × C × H × W)")
print("auxiliary classifier:", module.classifier)

# %% [markdown]
# **Step 1 — pooling.** Each channel is averaged over its $H\times W$ positions:
# $\bar f_c = \frac{1}{HW}\sum_{h,w} f_{c,h,w}$, one $C$-vector per image.
#
# **Step 2 — auxiliary classifier.** A linear layer on the pooled vector predicts the class:
# $p = W\bar f + b$ with $W \in \mathbb{R}^{K\times C}$ ($K = 10$ classes). It is trained with the true
# labels, so each row $W_k$ learns which channels speak *for* class $k$ (positive weights) and which
# speak against it (negative weights).

# %%
# NBVAL_CHECK_OUTPUT
pooled = f.mean(dim=(2, 3))                       # step 1: N × C
W, b = module.classifier.weight, module.classifier.bias
aux_by_hand = pooled @ W.T + b                    # step 2: N × K
with torch.no_grad():
    aux_library = module.auxiliary_logits(f)
print("pooled:", tuple(pooled.shape), " auxiliary logits:", tuple(aux_by_hand.shape))
print("auxiliary logits equal to the library:", torch.allclose(aux_by_hand, aux_library, atol=1e-6))

# %% [markdown]
# **Step 3 — the mask is a weight row.** The mask for an image of class $k$ is simply the row $W_k$ —
# raw and signed, no sigmoid, no bias, exactly as in the official code. Which $k$?
#
# * in **training** the true label $y$: $m = W_y$;
# * at **test time** the label is unknown, so the auxiliary head's own prediction: $m = W_{\hat k}$ with
#   $\hat k = \arg\max_k p_k$.
#
# **Step 4 — suppression.** Every channel is multiplied by its weight, broadcast over all positions:
# $\tilde f_{c,h,w} = f_{c,h,w}\, m_c$. Channels with a large positive weight pass, channels with a weight
# near zero are switched off, channels with a negative weight are flipped into evidence *against* the
# class.

# %%
# NBVAL_CHECK_OUTPUT
mask_train = W[yb]                                # step 3, training: true-label rows, N × C
k_hat = aux_library.argmax(dim=1)                # (equal logits; the library's, so a near-tie rounds alike)
mask_eval = W[k_hat]                              # step 3, evaluation: predicted-class rows
masked_train = f * mask_train[:, :, None, None]   # step 4: broadcast over H × W
masked_eval = f * mask_eval[:, :, None, None]

with torch.no_grad():
    lib_train, _ = module.train()(f, yb)          # training mode: mask from y
    lib_eval, _ = module.eval()(f)                # evaluation mode: mask from the auxiliary prediction
print("masked features (training) equal to the library:", torch.allclose(masked_train, lib_train, atol=1e-6))
print("masked features (evaluation) equal to the library:", torch.allclose(masked_eval, lib_eval, atol=1e-6))
print("mask_for(y) is W[y]:", torch.equal(module.mask_for(yb), mask_train))

# %% [markdown]
# The masked output is what the next block receives: `layer4_1` computes on it, and its own CAS module masks the
# result again. So the two masks compound.

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    next_by_hand = model.blocks[NEXT_LAYER](masked_eval)            # the second block on the masked features
    next_library = model.forward_details(xb).activations[NEXT_LAYER]
print(f"{NEXT_LAYER} computes on the masked output of {CAS_LAYER}:",
      torch.allclose(next_by_hand, next_library, atol=1e-5))

# %%
row = W[int(yb[0])].detach()
print(f"weight row of class {int(yb[0])}: {int((row < 0).sum())} of {row.numel()} channels negative, "
      f"{int(activations.suppressed_channels(row).sum())} suppressed (negative or ≤ 5% of the largest weight)")

# %% [markdown]
# **Step 5 — the loss.** The auxiliary heads must learn good rows, so each is trained with its own
# cross-entropy. With $S$ CAS modules and weight $\beta$ (the paper uses $\beta = 2$):
#
# $$\mathcal{L} = \mathrm{CE}(\text{main logits}, y) + \frac{\beta}{S}\sum_{s=1}^{S} \mathrm{CE}(\text{aux}_s, y).$$
#
# In PGD adversarial training both terms are computed on the adversarial examples (TRADES and MART add
# their CAS terms differently, following the official code: notebook 04 has the table).

# %%
# NBVAL_CHECK_OUTPUT
out = model.train().forward_details(xb, yb)       # training mode: masks from the true labels
beta = cas.DEFAULT_CAS_BETA
loss_by_hand = F.cross_entropy(out.logits, yb) + beta / len(out.aux_logits) * sum(F.cross_entropy(a, yb) for a in out.aux_logits)
print("S =", len(out.aux_logits), " beta =", beta)
print("CAS loss equal to the library:", torch.allclose(loss_by_hand, cas.cas_loss(out.logits, out.aux_logits, yb, beta)))
_ = model.eval()

# %% [markdown]
# ## 2 · Train (or reuse) AT and AT+CAS
#
# Now two real models: PGD adversarial training (AT) and the same with the two CAS modules. Each training batch is
# first attacked with the model in **evaluation** mode — so, as at test time, every mask comes from its auxiliary
# head's prediction — and the attack ascends the adaptive objective
# $\mathrm{CE}(\text{main}) + \beta\,\overline{\mathrm{CE}}(\text{aux})$ (what the official code does). The loss is
# then computed in **training** mode, where every mask is the true label's row, and is the CAS loss above.
# `training.train_or_load` saves each run under `runs/` and **reuses a finished run** with the same configuration —
# one trained by notebook 02 (or, on the gpu profile, notebook 04), or on the command line. The next cell prints
# each run's command, to be run from the repository root; on the gpu profile set `CAS_EDU_DATA` (or add
# `--data-root`). When nothing is reused, the training cell after it takes most of this notebook's running time.

# %%
RUNS = {"AT": "pgd_at", "AT+CAS": "pgd_at+cas"}   # label -> run of pipeline.observation_configs
run_dirs = {label: pipeline.observation_run_dir(RUNS_DIR, profile, name) for label, name in RUNS.items()}
for label, name in RUNS.items():
    config = configs[name]
    state = "finished, will be reused" if pipeline.is_finished(config, run_dirs[label]) else "to train"
    print(f"# {label}: {config.epochs} epochs, PGD-{config.attack_steps} training attack, {state}")
    print(pipeline.cli_command(config, f"notebooks/{run_dirs[label]}"))

# %%
at_model, at_history = training.train_or_load(config_at, run_dirs["AT"], progress=True, dataset=ds)
cas_model, cas_history = training.train_or_load(config_cas, run_dirs["AT+CAS"], progress=True, dataset=ds)

# %% [markdown]
# The training curves: loss, accuracy on the (attacked) training batches, and on the validation split
# natural accuracy and accuracy under PGD-10 (with the adaptive objective for the CAS model).
#
# **Why AT+CAS's training accuracy can sit near 100 % while its validation accuracy under attack does not.** Training
# accuracy is measured on the attacked training batches *in training mode*, where each CAS module multiplies the
# features by the weight row of the **true** label. The mask itself carries the answer: the layers after it see
# features shaped by $W_y$ and soon learn to read $y$ off them, whatever the attack did to the image. So for a CAS
# model the training accuracy says nothing about robustness. The validation curves are measured in evaluation mode
# (masks from the auxiliary predictions, the adaptive PGD-10) and are the ones to compare; the lines under the figure
# put the two side by side, each validation accuracy with its 95 % Wilson interval over the validation images
# (notebook 01). The training accuracy gets none: it averages over an epoch in which the model kept changing, so it
# estimates nothing about one model.

# %%
plots.training_curves_figure({"AT": at_history, "AT+CAS": cas_history},
                             title=f"PGD adversarial training with and without CAS ({ds.name}, {MODEL})").show()
for (label, history), config in zip({"AT": at_history, "AT+CAS": cas_history}.items(), (config_at, config_cas)):
    later = history[1:] or history   # from the second epoch on
    train = [record["train_accuracy"] for record in later]
    n_val = min(config.val_examples, len(ds.val))   # the validation images behind each validation accuracy
    natural_ci, robust_ci = (evaluation.wilson_interval(round(history[-1][key] * n_val), n_val).format(show_n=False)
                             for key in ("val_natural_accuracy", "val_robust_accuracy"))
    print(f"{label}: training accuracy from epoch {later[0]['epoch']} on between {min(train):.1%} and {max(train):.1%}; "
          f"last epoch on {n_val} validation images: natural {natural_ci}, PGD-10 {robust_ci}")

# %% [markdown]
# ## 3 · Does CAS reduce the channels adversarial examples wake?
#
# We measure both observations for AT and AT+CAS exactly as notebook 02 does (definitions in the docstring of
# `cas_edu.observations`), on the test images, at `layer4` — the output of its second block after the final ReLU,
# for AT+CAS **before** that block's mask, as in the paper's figures:
#
# * **observation 1**: mean adversarial ÷ mean natural activation; shown when its 95 % interval lies above 1;
# * a channel is **active** in an image when it exceeds a threshold $t$ × the image's largest channel (the paper:
#   $t$ = 1 %), **quiet** for a class when fewer than 20 % of the class's natural images activate it, and **woken**
#   when it is quiet and more than half of the class's adversarial images activate it;
# * **observation 2**: the attack (the paper's figures' PGD-20 on the same model, adaptive objective for CAS) wakes
#   more channels per class than random ±ε sign noise does; shown when the interval of the difference lies above 0.
#
# Intervals are 95 % bootstrap intervals over test images, resampled within class. The paper's claim for CAS is
# that it suppresses what observation 2 describes, so the column to read is *woken/class: attack* — AT vs AT+CAS.

# %%
x_obs, y_obs = pipeline.eval_examples(ds, N_OBSERVE)
models_by_label = {"AT": at_model, "AT+CAS": cas_model}
obs = {label: observations.measure_observations(m, x_obs, y_obs, EPS, seed=SEED)
       for label, m in models_by_label.items()}
display(Markdown(observations.observation_table(list(obs.items()))))

# %% [markdown]
# The verdicts below are computed from the intervals in the table, one line each — first the two observations per
# model (observation 2 from the interval of the attack − noise difference, which the table does not print), then,
# per threshold, whether AT+CAS wakes fewer channels than AT. We call a difference *resolved* only when
# the two intervals do not overlap (a conservative reading: overlapping intervals can still hide a small difference).

# %%
T_PAPER = activations.DEFAULT_THRESHOLD   # the paper's 1 %
for label, o in obs.items():
    print(f"{label}: adv/nat magnitude {o.magnitude_ratio.format()} -> observation 1 "
          f"{'shown' if o.observation_1 else 'not shown'}; at t = 1 % the attack wakes "
          f"{o.row(T_PAPER).woken_attack.format(1)} channels per class, sign noise "
          f"{o.row(T_PAPER).woken_noise.format(1)} -> observation 2 {'shown' if o.observation_2(T_PAPER) else 'not shown'}")


def cas_verdict(at_woken: observations.Estimate, cas_woken: observations.Estimate) -> str:
    """Whether AT+CAS wakes "fewer", "more" or "similar" channels per class than AT, read from the two intervals."""
    if cas_woken.high < at_woken.low:
        return "fewer"
    return "more" if cas_woken.low > at_woken.high else "similar"


VERDICTS = {"fewer": "AT+CAS wakes FEWER channels than AT (resolved): CAS reduces observation 2, as the paper reports",
            "more": "AT+CAS wakes MORE channels than AT (resolved): the opposite of the paper",
            "similar": "no resolved difference (the intervals overlap): CAS does not measurably reduce them"}
for at_row, cas_row in zip(obs["AT"].rows, obs["AT+CAS"].rows):
    print(f"t = {at_row.threshold:.0%}: woken per class AT {at_row.woken_attack.format(1)}, "
          f"AT+CAS {cas_row.woken_attack.format(1)} -> {VERDICTS[cas_verdict(at_row.woken_attack, cas_row.woken_attack)]}")

# %% [markdown]
# **How this compares with the paper.** The paper measures ResNet-18 on CIFAR-10 and reports that AT still leaves
# channels that adversarial examples wake, and that CAS suppresses them. The next cell puts our run next to that
# claim, at the paper's threshold, with the woken counts in proportion to `layer4`'s channels.

# %%
at_row, cas_row = obs["AT"].row(T_PAPER), obs["AT+CAS"].row(T_PAPER)
verdict = cas_verdict(at_row.woken_attack, cas_row.woken_attack)
print(f"{MODEL} on {ds.name}, t = 1 %: AT leaves {at_row.woken_attack.value:.1f} of {obs['AT'].channels} channels "
      f"woken per class, AT+CAS {cas_row.woken_attack.value:.1f}.")
print("Paper (ResNet-18, CIFAR-10): CAS reduces the channels adversarial examples wake. This run: "
      + {"fewer": "the same direction, resolved.",
         "more": "NOT reproduced: AT+CAS wakes more channels than AT.",
         "similar": "NOT reproduced: no resolved difference between AT and AT+CAS."}[verdict])

# %% [markdown]
# Where the paper's claim is not reproduced, do not overread it either way. Our cpu setting is small: 8×8 digits,
# `layer4` a single 1×1 position, 12 short epochs with a 3-step training attack. When AT alone leaves only a handful
# of woken channels out of `layer4`'s (the line above; notebook 02 compares AT with the standard model), there is
# little for CAS to reduce. And these are **pre-mask** activations: CAS does not have to make `layer4` itself
# quieter — it acts through its mask *after* the block, on what the next layer receives, which section 4 shows.
# The `gpu` profile runs this same code in the paper's setting.

# %% [markdown]
# ## 4 · What the mask does to the activations
#
# First the paper's view (its Figure 2, as in notebook 02): the test images of class `CLASS_ID`, PGD
# examples crafted on the same model (ε = `EPS`, adaptive objective for the CAS model), and per channel
# the number of images that activate it (at the paper's 1 %). These are **pre-mask** activations at `layer4`, so for
# AT+CAS they show what the block computes before CAS acts.

# %%
comparisons = {label: activations.compare_activations(m, ds.test.x, ds.test.y, EPS, class_id=CLASS_ID, seed=SEED)
               for label, m in models_by_label.items()}
plots.count_figure(comparisons, title=f"Figure 2 for AT and AT+CAS: how many class-{CLASS_ID} images activate "
                                      f"each channel of layer4 (before the mask)").show()
print(plots.summary_table(comparisons))

# %% [markdown]
# Now the view that shows the suppression: the mean activation of every channel **as the next layer
# receives it**, at the first CAS module (`layer4_0`, the one we rebuilt by hand). For AT that is the block output;
# for AT+CAS we show it before and after the mask $\tilde f = f\odot W_{\hat k}$. Channels are sorted by their
# natural activation, so the quiet channels of the class are on the right: compare how much red rises there for AT
# and for AT+CAS before the mask — fewer woken quiet channels is what the paper's CAS effect predicts.
# `activations.channel_data` precomputes the activations of the first 200 test images for a grid of ε values (the
# figures' PGD-20, adaptive objective for the CAS model); the explorer below reuses them.

# %%
EPS_GRID = [EPS / 2, EPS, 2 * EPS, 3 * EPS]
x_explore, y_explore = ds.test.x[:200], ds.test.y[:200]   # 200 test images, about 20 per class
data_at = activations.channel_data(at_model, x_explore, y_explore, [EPS], layer=CAS_LAYER, seed=SEED)
data_cas = activations.channel_data(cas_model, x_explore, y_explore, EPS_GRID, layer=CAS_LAYER, seed=SEED)
plots.suppression_figure({"AT": data_at, "AT+CAS": data_cas}, class_id=CLASS_ID, eps=EPS,
                         title=f"What {NEXT_LAYER} receives: class {CLASS_ID}, natural vs PGD-20 at ε = {EPS:.3g}").show()


# %% [markdown]
# The same in numbers, for class `CLASS_ID` at ε = `EPS`: first the right-hand side of the figure — of the channels
# the class's natural images leave quiet (mean activation at most 1 % of the class's strongest channel), how many the
# attack raises above that level, for AT and for AT+CAS before the mask; then how many channels the mask suppresses,
# how much of the pre-mask activation falls on them (natural vs adversarial), and whether the auxiliary head picks
# the class's own row. The sentences are generated from the values; they describe one class at `layer4_0`, without an
# interval — section 3's table (every class, at `layer4_1`, with intervals) is the measured statement, and where the
# two point different ways, quote the table.

# %%
def woken_quiet_channels(channel_data):
    """(woken, quiet): channels whose natural class mean is at most 1 % of the class's largest, and how many of those
    the attack's class mean lifts above that level (pre-mask, class CLASS_ID, ε = EPS)."""
    means = activations.class_mean_activations(channel_data, CLASS_ID, EPS)
    natural, adversarial = means["natural_pre"], means["adversarial_pre"]
    level = 0.01 * natural.max()
    quiet = natural <= level
    return int((adversarial[quiet] > level).sum()), int(quiet.sum())


woken = {"AT": woken_quiet_channels(data_at), "AT+CAS": woken_quiet_channels(data_cas)}
print(f"class {CLASS_ID}, ε = {EPS:.3g}, before the mask: the attack wakes "
      + ", ".join(f"{label} {w} of {q} quiet channels" for label, (w, q) in woken.items()) + " — "
      + ("a smaller share for AT+CAS, the direction of the paper's CAS effect"
         if woken["AT+CAS"][0] * woken["AT"][1] < woken["AT"][0] * woken["AT+CAS"][1]
         else "not a smaller share for AT+CAS"))
view = widgets.channel_view(data_cas, CLASS_ID, EPS)
n_suppressed, n_channels = int(view["suppressed"].sum()), len(view["mask"])
share_nat, share_adv = view["suppressed_share_natural"], view["suppressed_share_adversarial"]
print(f"class {CLASS_ID}, ε = {EPS:.3g}: the mask of {CAS_LAYER} suppresses {n_suppressed} of {n_channels} channels "
      f"(negative or ≤ 5 % of the largest weight)")
print(f"share of the pre-mask activation on those channels: natural {share_nat:.0%}, adversarial {share_adv:.0%} "
      f"({100 * (share_adv - share_nat):+.0f} percentage points under attack)")
print(f"the auxiliary head picks the class's own mask for {view['right_mask_natural']:.0%} of natural and "
      f"{view['right_mask_adversarial']:.0%} of adversarial images")

# %% [markdown]
# **How to read it.** The mask can only help where two things hold: adversarial images must put activation on
# channels the class's row suppresses (the share above), and the auxiliary head must still pick the right row under
# attack (the last line). When it picks a wrong row, the wrong class's channels pass and the true class's are
# suppressed — the mask then helps the attacker. The table after the explorer follows both as ε grows.

# %% [markdown]
# ## Channel explorer
#
# Pick a class and an attack strength. The top panel shows the class's mask — its weight row $W_k$ at `layer4_0`,
# channels sorted from the largest weight down, suppressed channels (negative or at most 5 % of the
# largest weight) in grey. The two lower panels show the mean activation of that class's test images,
# natural (blue) and adversarial (red), before and after the mask. The title summarises accuracy, how
# often the auxiliary head picks the right mask, and how much activation falls on suppressed channels.
#
# Things to try: raise ε — does the red curve in the middle panel spread into the grey channels, and at which ε does
# "right mask" drop? Once the auxiliary head is fooled, the *wrong* class's row is applied. The table under the
# explorer follows both for class `CLASS_ID`.
# (The widget needs a running kernel; `explorer.update()` is the callback, so you can also drive it from code.)

# %%
explorer = widgets.ChannelExplorer(data_cas, ds.classes, class_id=CLASS_ID, eps=EPS)
explorer.widget

# %% [markdown]
# For a reader without a running kernel (GitHub, nbviewer, the course site): a static picture of the explorer's
# initial view. Running the notebook, the explorer above is the one to use.

# %%
explorer.snapshot().show()

# %%
print(f"class {CLASS_ID} as ε grows (pre-mask change = Σ|adv − nat| / Σ nat):")
print(f"{'ε':>6} {'accuracy [95 % CI]':>19} {'right mask':>11} {'pre-mask change':>16} "
      f"{'adv. share on suppressed':>25}")
for eps in EPS_GRID:
    v = widgets.channel_view(data_cas, CLASS_ID, eps)
    accuracy = evaluation.wilson_interval(round(v["accuracy_adversarial"] * v["n_examples"]), v["n_examples"])
    print(f"{eps:>6.3g} {accuracy.format(0, show_n=False):>19} {v['right_mask_adversarial']:>11.0%} "
          f"{v['pre_mask_change']:>16.2f} {v['suppressed_share_adversarial']:>25.0%}")
print(f"({v['n_examples']} test images of class {CLASS_ID})")

# %% [markdown]
# ## 5 · The evaluation lesson: is CAS really robust?
#
# At test time the mask is chosen by an **argmax** over the auxiliary logits. An argmax is piecewise constant: its
# gradient is zero wherever it is defined, so a white-box attack that differentiates the model sees the choice of
# mask as a constant and cannot learn to steer it. Athalye, Carlini & Wagner (2018) call such gradients
# **shattered**, one form of **gradient masking**: an attack fails not because the model is robust but because its
# gradients point nowhere useful, and the robust accuracy it reports (an upper bound, notebook 01) is then far too
# high. Before we evaluate AT+CAS, we watch gradient masking where we know the answer: a toy defence built to mask.
#
# ### 5.1 · A defence that masks gradients on purpose
#
# `gradient_masking.quantized_model` puts an **input quantiser** in front of a model: every pixel is rounded to one of
# a few levels (here 4: 0, 1/3, 2/3 and 1) before the classifier sees it. Rounding is piecewise constant too, so the
# input gradient is exactly zero almost everywhere: PGD has nothing to follow. The model behind the quantiser is
# notebook 01's standard small CNN (reused when notebook 01 or 02 trained it) — no defence at all — so whatever
# robustness the toy shows is fake. We attack 100 test digits at ε = 0.2, twice the course's budget: at 0.1 a
# perturbation changes a pixel only where it crosses a rounding threshold, which many pixels cannot, so the toy would
# be partly robust for real and the lesson muddier. Two checks, the same we will run on AT+CAS:
#
# 1. white-box PGD-20 against the black-box **Square** attack, which never looks at gradients: if Square finds errors
#    PGD misses, the library's masking check (`report.warnings`) fires;
# 2. **BPDA** (Backward Pass Differentiable Approximation, Athalye et al. 2018): keep the quantiser in the forward pass,
#    replace it by the identity in the backward pass, and run the same PGD-20 again from the same random starts.

# %%
TOY_LEVELS, TOY_EPS, N_TOY, TOY_QUERIES = 4, 0.2, 100, 300   # quantiser levels, L∞ budget, test digits, Square queries
digits = ds if DATASET == "digits" else data.load("digits")
small_config = presets.make_config("digits", method="standard", epochs=6, seed=SEED, device=DEVICE)   # notebook 01's
small_cnn, _ = training.train_or_load(small_config, f"{RUNS_DIR}/cpu/digits_standard", progress=True, dataset=digits)
toy = gradient_masking.quantized_model(small_cnn, TOY_LEVELS).eval()
x_toy, y_toy = digits.test.x[:N_TOY], digits.test.y[:N_TOY]
toy_report = evaluation.evaluate(toy, x_toy, y_toy, TOY_EPS, attacks=("natural", "pgd20", "square"),
                                 square_queries=TOY_QUERIES, seed=SEED)
print(toy_report.table())

# %%
with gradient_masking.bpda(toy):   # same PGD-20, same random starts; only the backward pass differs
    toy_bpda = evaluation.accuracy(toy, x_toy, y_toy, "pgd20", eps=TOY_EPS,
                                   seed=evaluation.attack_seed(SEED, "pgd20", "ce"))
toy_acc = toy_report.accuracy
toy_ci = {attack: toy_report.interval(attack).format(0, show_n=False) for attack in toy_acc}   # 95 % Wilson
toy_ci["bpda"] = evaluation.wilson_interval(toy_bpda).format(0, show_n=False)
toy_gap = evaluation.paired_interval(toy_bpda, toy_report.correct["pgd20"]["ce"])
print(f"toy at ε = {TOY_EPS} on {N_TOY} digits: natural {toy_ci['natural']}, PGD-20 {toy_ci['pgd20']}, "
      f"Square {toy_ci['square']}, PGD-20 through BPDA {toy_ci['bpda']}")
print("1. masking check: " + ("fired — Square found errors that PGD-20 missed" if toy_report.warnings
                              else "silent — Square found nothing PGD-20 missed"))
print(f"2. BPDA − plain PGD-20 on the same images and starts: {toy_gap}")
print("-> " + ("PGD through BPDA breaks what plain PGD-20 could not (the interval lies below 0): the toy's "
               "robustness was gradient masking" if toy_gap.high < 0 else
               "no resolved difference: BPDA did not break the toy here"))

# %% [markdown]
# **How to read it.** Read the lines above against what we know: the model behind the quantiser is undefended. If
# plain PGD-20 reports nearly the natural accuracy while Square and PGD through BPDA drive it down, the quantiser did
# not make the model robust — it hid the gradient. Both checks expose it from different sides: Square needs no
# gradient, BPDA repairs the gradient. Keep them in mind; they are exactly what we now run on AT+CAS.
#
# ### 5.2 · Attacking AT and AT+CAS
#
# A CAS model hides its mask choice behind an argmax, so each attack below sees a different part of it:
#
# | attack | what it differentiates | adaptive to CAS? |
# |---|---|---|
# | FGSM, PGD-20, CW∞ on the main head (`ce`) | the main loss | no: the mask choice is a constant to it |
# | FGSM, PGD-20, CW∞ adaptive (`ce+cas`) — the official evaluation | main loss + β · auxiliary losses | partly: it pushes the auxiliary heads towards a wrong class, and so a wrong mask, but still cannot see how the choice of row changes the main loss |
# | straight-through PGD (BPDA through the mask; section 5.3) | the adaptive loss, with the softmax-weighted mask standing in for the argmax in the backward pass | yes |
# | Square (black-box) | nothing: random square-shaped changes, kept when the loss rises | needs no gradient, so masking cannot fool it — but it is a slower, weaker search |
# | AutoAttack (`gpu` profile) | APGD-CE, APGD-T and FAB-T on the main head through the hard mask, plus Square | no, unless run through the straight-through model (`autoattack-st`) |
#
# No row is "the trustworthy one": each can miss what another finds. So the number to quote is the **per-example
# worst case** over all of them (an image counts only if it survives every attack), and the disagreements between
# attacks are the masking checks.
#
# **Reduced budget on the cpu profile.** The white-box attacks run on `N_EVAL` = 100 test images; Square runs on a
# class-balanced 50 of them with `SQUARE_QUERIES` = 500 queries (AutoAttack's default is 5,000), and on the CAS model
# only — the one under suspicion. AutoAttack (hundreds of gradient steps per image, against every target class) and
# the registry's straight-through PGD-100 × 5 restarts do not fit this notebook's CPU budget on `resnet18_w32`
# (measured when this notebook was written): they run on the `gpu` profile (10,000 test images, the costly attacks on
# a class-balanced 1,000, 5,000 Square queries). The cpu profile runs the straight-through attack with PGD-20's budget
# instead (section 5.3), and notebook 04's cpu profile runs PGD-100 × 5 on its small CNN. With 100 images one image
# is one percentage point.

# %%
x_eval, y_eval = pipeline.eval_examples(ds, N_EVAL)
at_attacks = EVAL_ATTACKS if PROFILE == "gpu" else tuple(a for a in EVAL_ATTACKS if a not in evaluation.COSTLY)
reports = {
    "AT": evaluation.evaluate(at_model, x_eval, y_eval, EPS, attacks=at_attacks, square_queries=SQUARE_QUERIES,
                              subset_n=N_COSTLY, seed=SEED),
    "AT+CAS": evaluation.evaluate(cas_model, x_eval, y_eval, EPS, attacks=EVAL_ATTACKS, square_queries=SQUARE_QUERIES,
                                  subset_n=N_COSTLY, seed=SEED),
}
for name, report in reports.items():
    print(f"--- {name}\n{report.table()}\n")

# %%
plots.robustness_comparison_figure(reports, title=f"Accuracy of AT and AT+CAS under each attack "
                                   f"(ε = {EPS:.3g}, {len(x_eval)} test images)").show()

# %% [markdown]
# The lines below read the AT+CAS report: the main-head attack against the adaptive one, and the per-example worst
# case over every attack (computed on the images every attack ran on), then AT+CAS against AT on the same images.

# %%
cas_report = reports["AT+CAS"]
acc = cas_report.accuracy


def cas_ci(attack, objective=None):
    """AT+CAS's accuracy under one attack with its 95 % Wilson interval: 'accuracy % [low, high]'."""
    return cas_report.interval(attack, objective).format(0, show_n=False)


strong = ", ".join(f"{evaluation.LABELS[a]} {cas_ci(a, o)}" for a in EVAL_ATTACKS if a in evaluation.COSTLY
                   for o in acc[a])
print(f"AT+CAS: main-head PGD-20 {cas_ci('pgd20', 'ce')}, adaptive PGD-20 {cas_ci('pgd20', 'ce+cas')} "
      f"(on {cas_report.count('pgd20')} images); {strong} (on {cas_report.count('square')} images).")
main_minus_adaptive = evaluation.paired_interval(cas_report.correct["pgd20"]["ce"],
                                                 cas_report.correct["pgd20"]["ce+cas"])
print(f"main-head − adaptive PGD-20 on the same images: {main_minus_adaptive}")
print("-> " + ("the main-head attack overstates AT+CAS's robustness (the interval lies above 0)"
               if main_minus_adaptive.low > 0 else
               "the main-head attack finds more errors than the adaptive one (the interval lies below 0)"
               if main_minus_adaptive.high < 0 else
               "no resolved difference between the main-head and the adaptive PGD-20 (the interval contains 0)"))
print(f"the per-example worst case over every attack: {cas_report.worst_case_interval}")
gain = evaluation.paired_difference(reports["AT+CAS"], reports["AT"])   # worst case, on the images both ran on
print(f"AT+CAS − AT, per-example worst case on the same images: {gain}")
print("-> " + ("AT+CAS is more robust than AT here (the interval lies above 0)" if gain.low > 0 else
               "AT+CAS is less robust than AT here (the interval lies below 0)" if gain.high < 0 else
               "no resolved difference between AT+CAS and AT (the interval contains 0)"))

# %% [markdown]
# **The library's masking checks.** `report.warnings` compares attacks that should be weaker with attacks that should
# be stronger, and warns when the weaker one finds more errors:
#
# * the black-box **Square** finds *lower* accuracy than the white-box PGD-20 / CW∞ — gradients are misleading the
#   white-box attacks (gradient masking);
# * single-step **FGSM** beats multi-step PGD — the same;
# * for CAS, the **main-head** attack beats the adaptive one — the adaptive objective's gradients mislead. (The
#   reverse, main head *above* adaptive, is expected and no warning: the main-head attack cannot steer the masks,
#   which is why the adaptive attack is the official evaluation.)
# * **AutoAttack** or the **straight-through** PGD-100 × 5 (gpu profile) finds lower accuracy than PGD-20 — PGD-20 is
#   too weak and overstates robustness; a stronger attack finding more is not by itself masking. A straight-through
#   attack beating the *same* attack run without it is: plain AutoAttack in the library's check, the same PGD-20
#   from the same starts in section 5.3 — then the argmax hid gradients from the plain attack.
#
# One more sanity check needs no comparison at all: with a huge budget (ε = 0.5 lets the attack paint
# most of an image) any attack with useful gradients should drive accuracy to about zero.

# %%
for name, report in reports.items():
    print(f"{name}: " + ("; ".join(report.warnings) if report.warnings else "no masking warning"))
big = evaluation.evaluate(cas_model, x_eval, y_eval, 0.5, attacks=("pgd20",))
print(f"AT+CAS under main-head and adaptive PGD-20 at ε = 0.5: {big.interval('pgd20', 'ce').format(0, show_n=False)} "
      f"and {big.interval('pgd20', 'ce+cas').format(0, show_n=False)} accuracy (n = {big.count('pgd20')})")

# %% [markdown]
# ### 5.3 · The toy's checks on AT+CAS, and the straight-through attack
#
# The masking check and Square ran above. The third check is BPDA's counterpart for CAS. The piecewise-constant step
# is now the argmax that picks the mask: a shattered gradient. `cas.straight_through(model)` keeps the forward pass —
# the mask is still $W_{\arg\max_k p_k}$, bit for bit — and in the backward pass only differentiates the
# softmax-weighted mask $\sum_k \mathrm{softmax}(p)_k\, W_k$ instead, so the gradient sees how moving the auxiliary
# prediction changes the mask. We run the adaptive PGD-20 again inside it, from the same random starts: the only
# difference from the adaptive PGD-20 above is the backward pass through the mask choice. The table then puts the toy
# and AT+CAS side by side, check by check.
#
# A caveat about the surrogate: when an auxiliary head is very confident (its top softmax probability near 1), the
# softmax-weighted mask is almost the hard mask and its gradient almost zero, so the straight-through attack then adds
# little — a "no difference" says as much about the surrogate as about the mask. The last line prints how confident
# the heads are.

# %%
with cas.straight_through(cas_model):   # same adaptive PGD-20, same random starts; only the backward pass differs
    st_correct = evaluation.accuracy(cas_model, x_eval, y_eval, "pgd20", eps=EPS, objective="ce+cas",
                                     seed=evaluation.attack_seed(SEED, "pgd20", "ce+cas"))
st_gap = evaluation.paired_interval(st_correct, cas_report.correct["pgd20"]["ce+cas"])
examples, survived_all = cas_report.worst_case_correct()   # the images every attack ran on
worst_with_st = evaluation.wilson_interval(survived_all & st_correct[examples])

rows = [["natural", toy_ci["natural"], cas_ci("natural")],
        ["white-box PGD-20 (plain gradients; adaptive objective for AT+CAS)", toy_ci["pgd20"],
         cas_ci("pgd20", "ce+cas")],
        ["Square, no gradients", toy_ci["square"],
         f"{cas_ci('square')} (on {cas_report.count('square')} images)" if "square" in acc else "not run"],
        ["PGD-20 through the step (BPDA / straight-through)", toy_ci["bpda"],
         evaluation.wilson_interval(st_correct).format(0, show_n=False)],
        ["masking warning", "fired" if toy_report.warnings else "silent",
         "fired" if cas_report.warnings else "silent"]]
display(Markdown(tables.markdown_table(["check", f"toy (quantiser, ε = {TOY_EPS}, {N_TOY} images)",
                                        f"AT+CAS (ε = {EPS:.3g}, {len(x_eval)} images)"], rows)))
print("accuracies with their 95 % Wilson intervals in brackets")
print(f"AT+CAS: straight-through − adaptive PGD-20 on the same images and starts: {st_gap}")
print("-> " + ("the straight-through attack finds errors the adaptive one misses (the interval lies below 0): the "
               "argmax mask was hiding gradients; quote the lower number" if st_gap.high < 0 else
               "the straight-through attack is weaker here (the interval lies above 0): the soft mask is a poor "
               "stand-in for the hard one on these images; keep the adaptive number" if st_gap.low > 0 else
               "no resolved difference: with PGD-20's budget the argmax mask does not measurably hide gradients "
               "here (the gpu profile's PGD-100 × 5 is the stronger test)"))
print(f"AT+CAS per-example worst case with the straight-through PGD-20 added: {worst_with_st.format(0)} "
      f"(without it: {cas_report.worst_case_interval.format(0)})")
with torch.no_grad(), models.eval_mode(cas_model):
    aux_logits = cas_model.forward_details(x_eval[:N_COSTLY].to(device)).aux_logits
print("mean top probability of each auxiliary head on natural test images: "
      + ", ".join(f"{a.softmax(dim=1).amax(dim=1).mean():.3f}" for a in aux_logits))


# %% [markdown]
# **What the numbers say** — read them off the lines above. The toy shows what masking looks like when it is there.
# For AT+CAS: if the masking check stays silent, Square finds no more than the white-box attacks, the ε = 0.5 check
# drives accuracy to about zero, and the straight-through attack finds no more than the adaptive PGD-20, then the
# gradients are useful and the worst case is the number to quote — on the cpu profile with the caveat that
# AutoAttack and the registry's PGD-100 × 5 straight-through attack did not run. If any check fails, quote the lowest
# number and say which attack found it. That the main-head PGD-20 can report more than the adaptive one (section
# 5.2's first paired line says whether it does here) is expected — it cannot steer the masks — and it is why a CAS
# model must never be evaluated with the main-head attack alone. The last paired line of section 5.2 compares AT+CAS
# with AT on the same images; like every interval here it covers the choice of test images, **not** the training
# run: each model here is one training seed, and a second seed may move a short digits run by more than that (not
# measured here). The paper's gains are reported for ResNet-18 on CIFAR-10,
# measured with the official (adaptive) attacks only; notebook 04 compares AT, TRADES and MART with and without CAS.

# %% [markdown]
# ## 6 · Exercises
#
# Each coding exercise has a checker in `cas_edu.exercises`: it runs your function on fresh random inputs,
# compares it with the library and answers in one line. A collapsed cell below each exercise holds a
# worked solution — try first, then click the "…" to expand it.
#
# ### Exercise 1 — the CAS mask for the true class
# Write `my_cas_mask(cas_module, features, y)` that returns the masked feature map in **training mode**:
# every image's channels multiplied by the weight row of its true label (the module's linear layer is
# `cas_module.classifier`).

# %%
def my_cas_mask(cas_module, features, y):
    # your code here: use cas_module.classifier.weight and the labels y
    return features


exercises.check_cas_mask(my_cas_mask);


# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution: the true-label weight rows (N × C), broadcast over H × W.
def my_cas_mask(cas_module, features, y):
    mask = cas_module.classifier.weight[y]
    return features * mask[:, :, None, None]


exercises.check_cas_mask(my_cas_mask);


# %% [markdown]
# ### Exercise 2 — the CAS loss
# Write `my_cas_loss(logits, aux_logits_list, y, beta)` =
# $\mathrm{CE}(\text{logits}, y) + \frac{\beta}{S}\sum_s \mathrm{CE}(\text{aux}_s, y)$ for a list of $S$
# auxiliary logit tensors (ResNet-18 has $S = 2$).

# %%
def my_cas_loss(logits, aux_logits_list, y, beta):
    # your code here: add the auxiliary cross-entropies
    return F.cross_entropy(logits, y)


exercises.check_cas_loss(my_cas_loss);


# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution: the mean over the S heads, times beta.
def my_cas_loss(logits, aux_logits_list, y, beta):
    aux = torch.stack([F.cross_entropy(a, y) for a in aux_logits_list]).mean()
    return F.cross_entropy(logits, y) + beta * aux


exercises.check_cas_loss(my_cas_loss);

# %% [markdown]
# ### Exercise 3 — when does the mask go wrong?
# With the explorer (or `widgets.channel_view(data_cas, class_id, eps)`), find for each class the smallest
# ε in the grid at which the auxiliary head picks the right mask for fewer than half of the adversarial
# images. What happens to the after-mask activations then, and why does this make the adaptive attack
# (which attacks the auxiliary heads too) stronger than the main-head attack?

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution: scan the grid; 'right_mask_adversarial' is the fraction of images whose mask is their true class's row.
for k in range(len(ds.classes)):
    wrong = [e for e in EPS_GRID if widgets.channel_view(data_cas, k, e)["right_mask_adversarial"] < 0.5]
    print(f"class {k}: mask mostly wrong from ε = {wrong[0]:.3g}" if wrong
          else f"class {k}: mask right for most images up to ε = {EPS_GRID[-1]:.3g}")
# Once the wrong row is applied, the channels of the *wrong* class pass and the true class's channels are
# suppressed: the mask now helps the attacker. The adaptive objective (ce + β·CE(aux)) pushes for exactly
# this, while the main-head attack never sees the argmax that picks the row.

# %% [markdown]
# ### Exercise 4 — a trustworthy number
# Your colleague reports "AT+CAS: 80 % robust accuracy under PGD-20". Which two questions do you ask before
# believing it? Answer in words, then check with `reports["AT+CAS"].table()`.

# %% [markdown] jupyter={"source_hidden": true} tags=["solution"]
# **Solution.** (1) *Which objective did the attack use?* A main-head-only (`ce`) attack cannot steer the
# argmax mask; ask for the adaptive `ce+cas` number. (2) *Did a gradient-free attack agree?* Ask for Square or
# AutoAttack (with enough queries and examples) — and, for CAS, an attack through the mask (the straight-through
# PGD of section 5.3). The number to quote is the **worst case** over all attacks (`pipeline.worst_case(report)`),
# on how many images, with its 95 % interval: `report.worst_case_interval`, or `evaluation.wilson_interval(correct)`
# for any accuracy from its per-example results (the report's table prints one next to every accuracy). On a hundred
# test images that interval is about 5 points wide near 100 % and about 20 points wide near 50 %
# (`evaluation.wilson_interval(99, 100)` and `(50, 100)`); `evaluation.paired_difference` puts an interval on a
# difference between two models evaluated on the same images.

# %% [markdown]
# ## References
#
# * Y. Bai, Y. Zeng, Y. Jiang, S.-T. Xia, X. Ma, Y. Wang. *Improving Adversarial Robustness via Channel-wise
#   Activation Suppressing.* ICLR 2021. arXiv:2103.08307. Official code: github.com/bymavis/CAS_ICLR2021.
# * A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu. *Towards Deep Learning Models Resistant to Adversarial
#   Attacks.* ICLR 2018 (PGD, adversarial training).
# * H. Zhang, Y. Yu, J. Jiao, E. P. Xing, L. El Ghaoui, M. I. Jordan. *Theoretically Principled Trade-off between
#   Robustness and Accuracy.* ICML 2019 (TRADES).
# * Y. Wang, D. Zou, J. Yi, J. Bailey, X. Ma, Q. Gu. *Improving Adversarial Robustness Requires Revisiting
#   Misclassified Examples.* ICLR 2020 (MART).
# * A. Athalye, N. Carlini, D. Wagner. *Obfuscated Gradients Give a False Sense of Security: Circumventing Defenses to
#   Adversarial Examples.* ICML 2018 (shattered gradients, BPDA, input quantisation as a masking defence).
# * N. Carlini, A. Athalye, N. Papernot, W. Brendel, J. Rauber, D. Tsipras, I. Goodfellow, A. Madry, A. Kurakin.
#   *On Evaluating Adversarial Robustness.* arXiv:1902.06705, 2019.
# * F. Tramèr, N. Carlini, W. Brendel, A. Madry. *On Adaptive Attacks to Adversarial Example Defenses.* NeurIPS 2020.
# * F. Croce, M. Hein. *Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free
#   Attacks.* ICML 2020 (AutoAttack).
# * N. Carlini, D. Wagner. *Towards Evaluating the Robustness of Neural Networks.* IEEE S&P 2017 (the CW margin loss).
# * M. Andriushchenko, F. Croce, N. Flammarion, M. Hein. *Square Attack: a Query-efficient Black-box Adversarial
#   Attack via Random Search.* ECCV 2020.
