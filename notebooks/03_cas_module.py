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
# In notebook 02 we saw two things about the channels of an intermediate layer:
# adversarial examples activate channels **more strongly**, and **more uniformly** — channels that natural
# images of a class leave quiet light up. Adversarial training (AT) fixes the first, not the second.
# *Channel-wise Activation Suppressing* (CAS; Bai et al., ICLR 2021) targets the second.
#
# In this notebook we
#
# 1. build the CAS module step by step by hand — pooling → auxiliary classifier → mask from the class's
#    weight row → suppression — and check every step equals the library's `cas_edu.cas.CASModule`;
# 2. train a small CNN with AT and with AT+CAS and look at what the CAS mask does to natural and
#    adversarial activations;
# 3. explore the mask channel by channel with an interactive widget;
# 4. learn why measuring the robustness of a CAS model needs care (**gradient masking**) and compare four
#    ways of attacking it;
# 5. finish with exercises; your code is checked against the library.
#
# Everything runs on a CPU in about two minutes (8×8 digits, a small CNN, short training).

# %% [markdown]
# ## Configuration
# `PROFILE` comes from the environment variable `CAS_EDU_PROFILE`: `cpu` (the default, what the tests run)
# keeps every budget small; `gpu` trains longer and evaluates on the whole digits test set with the full
# Square/AutoAttack query budget. The model and data stay the same — this notebook is about the mechanism.

# %%
import os

PROFILE = os.environ.get("CAS_EDU_PROFILE", "cpu")   # "cpu" (small, default) or "gpu" (longer training, full evaluation)
DATASET = "digits"          # scikit-learn's 8×8 digits: no download needed
EPS = 0.1                   # L∞ attack budget (pixels in [0, 1])
EPOCHS = 6 if PROFILE == "cpu" else 12
ATTACK_STEPS = 5 if PROFILE == "cpu" else 10   # PGD steps of the training attack
N_EVAL = 100 if PROFILE == "cpu" else 359      # test images for the evaluation lesson
SQUARE_QUERIES = 500 if PROFILE == "cpu" else 5000
DEVICE = "auto"             # CUDA, then MPS, then CPU
SEED = 0
RUNS_DIR = f"runs/{PROFILE}" if PROFILE == "cpu" else "runs/digits_long"

# %%
import torch
import torch.nn.functional as F

from cas_edu import activations, cas, data, evaluation, exercises, models, pipeline, plots, presets, \
    runtime, training, widgets

device = runtime.resolve_device(DEVICE)
runtime.seed_everything(SEED)
ds = data.load(DATASET)
print(f"device: {device.type}")
print(f"{ds.name}: train {len(ds.train)}, val {len(ds.val)}, test {len(ds.test)} images of shape {ds.input_shape}")

# %% [markdown]
# ## 1 · The CAS module, step by step
#
# CAS sits after a block of the network. In our small CNN it follows `block3`, whose output (after the
# ReLU) is a feature map $f \in \mathbb{R}^{N\times C\times H\times W}$ with $C = 128$ channels.
# We take an untrained model (weights fixed by the seed) and eight test digits, and rebuild by hand what
# the module does with $f$.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(SEED)
model = models.build("small_cnn", in_channels=1, cas=True).eval()
module = model.cas["block3"]
xb, yb = ds.test.x[:8], ds.test.y[:8]
with torch.no_grad():
    f = model.forward_details(xb).activations["block3"]   # the pre-mask feature map of block3
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

# %%
row = W[int(yb[0])].detach()
print(f"weight row of class {int(yb[0])}: {int((row < 0).sum())} of {row.numel()} channels negative, "
      f"{int(activations.suppressed_channels(row).sum())} suppressed (negative or ≤ 5% of the largest weight)")

# %% [markdown]
# **Step 5 — the loss.** The auxiliary head must learn good rows, so it is trained with its own
# cross-entropy. With $S$ CAS modules and weight $\beta$ (the paper uses $\beta = 2$):
#
# $$\mathcal{L} = \mathrm{CE}(\text{main logits}, y) + \frac{\beta}{S}\sum_{s=1}^{S} \mathrm{CE}(\text{aux}_s, y).$$
#
# In PGD adversarial training both terms are computed on the adversarial examples (TRADES and MART add
# their CAS terms differently, following the official code: notebook 04 has the table).

# %%
# NBVAL_CHECK_OUTPUT
module.train()
out = model.train().forward_details(xb, yb)       # training mode: masks from the true labels
beta = cas.DEFAULT_CAS_BETA
loss_by_hand = F.cross_entropy(out.logits, yb) + beta / len(out.aux_logits) * sum(F.cross_entropy(a, yb) for a in out.aux_logits)
print("S =", len(out.aux_logits), " beta =", beta)
print("CAS loss equal to the library:", torch.allclose(loss_by_hand, cas.cas_loss(out.logits, out.aux_logits, yb, beta)))
_ = model.eval()

# %% [markdown]
# ## 2 · Train AT and AT+CAS
#
# Now two real models: PGD adversarial training (AT) and the same with a CAS module after `block3`.
# During training the attack ascends the adaptive objective $\mathrm{CE}(\text{main}) + \beta\,\overline{\mathrm{CE}}(\text{aux})$
# (what the official code does), the mask uses the true label, and the loss is the CAS loss above.
# `training.train_or_load` writes the runs under `notebooks/runs/` and **reuses a finished run** with the
# same configuration — also one made on the command line; the cell prints the command.
# On a CPU each model takes a few seconds per epoch.

# %%
config_at = presets.make_config(DATASET, method="pgd_at", cas=False, epochs=EPOCHS, attack_steps=ATTACK_STEPS,
                                eps=EPS, seed=SEED, device=DEVICE)
config_cas = presets.make_config(DATASET, method="pgd_at", cas=True, epochs=EPOCHS, attack_steps=ATTACK_STEPS,
                                 eps=EPS, seed=SEED, device=DEVICE)
for config in (config_at, config_cas):
    print(pipeline.cli_command(config, f"notebooks/{RUNS_DIR}/{pipeline.run_name(config.method, config.cas)}"))
at_model, at_history = training.train_or_load(config_at, f"{RUNS_DIR}/pgd_at", progress=True, dataset=ds)
cas_model, cas_history = training.train_or_load(config_cas, f"{RUNS_DIR}/pgd_at+cas", progress=True, dataset=ds)

# %% [markdown]
# The training curves: loss, accuracy on the (attacked) training batches, and on the validation split
# natural accuracy and accuracy under PGD-10 (with the adaptive objective for the CAS model).

# %%
plots.training_curves_figure({"AT": at_history, "AT+CAS": cas_history},
                             title="PGD adversarial training with and without CAS (digits, small CNN)").show()

# %% [markdown]
# ## 3 · What the mask does to the activations
#
# First the paper's view (Figure 2 of the paper, as in notebook 02): the test images of class 0, PGD
# examples crafted on the same model (ε = `EPS`, adaptive objective for the CAS model), and per channel
# the number of images that activate it. These are **pre-mask** activations, so for AT+CAS they show what
# `block3` computes before CAS acts.

# %%
runtime.seed_everything(SEED)
comparisons = {
    "AT": activations.compare_activations(at_model, ds.test.x, ds.test.y, EPS, class_id=0),
    "AT+CAS (before the mask)": activations.compare_activations(cas_model, ds.test.x, ds.test.y, EPS, class_id=0,
                                                                 objective="ce+cas"),
}
plots.count_figure(comparisons).show()
print(plots.summary_table(comparisons))

# %% [markdown]
# Now the view that shows the suppression: the mean activation of every channel **as the next layer
# receives it**. For AT that is the block output; for AT+CAS we show it before and after the mask
# $\tilde f = f\odot W_{\hat k}$. Channels are sorted by their natural activation, so the quiet channels of
# the class are on the right. `activations.channel_data` precomputes the activations of the first 200 test images for a grid of
# ε values (PGD-10, adaptive objective for the CAS model); the explorer below reuses them.

# %%
EPS_GRID = [0.0, 0.05, 0.1, 0.2, 0.3]
x_explore, y_explore = ds.test.x[:200], ds.test.y[:200]   # 200 test images, about 20 per class
data_at = activations.channel_data(at_model, x_explore, y_explore, [EPS], seed=SEED)
data_cas = activations.channel_data(cas_model, x_explore, y_explore, EPS_GRID, seed=SEED)
plots.suppression_figure({"AT": data_at, "AT+CAS": data_cas}, class_id=0, eps=EPS).show()

# %%
view = widgets.channel_view(data_cas, class_id=0, eps=EPS)
print(f"class 0, ε = {EPS}: the mask suppresses {int(view['suppressed'].sum())} of {len(view['mask'])} channels")
print(f"share of pre-mask activation on those channels: natural {view['suppressed_share_natural']:.0%}, "
      f"adversarial {view['suppressed_share_adversarial']:.0%}")
print(f"auxiliary head picks the right mask: natural {view['right_mask_natural']:.0%}, "
      f"adversarial {view['right_mask_adversarial']:.0%}")

# %% [markdown]
# **What we see (digits, ε = 0.1, our run).** On this small problem the effect is modest, and we say so
# plainly. *Before* the mask, AT and AT+CAS look alike: in the summary table adversarial examples activate
# slightly *less* than natural ones (ratio below 1) and almost every channel is activated in both — the
# paper's "more uniform activation" shows up strongly for ResNet-18 on CIFAR-10 (512 channels), much less
# for 128 channels on 8×8 digits. The mask is where CAS acts: for class 0 it suppresses about two thirds of
# the channels (negative or near-zero weights). Adversarial images put more of their activation on exactly
# those channels than natural ones do (46 % vs 42 % at ε = 0.1, 60 % at ε = 0.3), and after the mask those
# channels contribute nothing or count *against* the class — in the after-mask panel the tail of the red
# bars is flattened or negative. This only works while the auxiliary head picks the right row: at
# ε = 0.1 it does for every class-0 image, from ε = 0.2 it starts to fail (try it in the explorer).

# %% [markdown]
# ## 4 · Channel explorer
#
# Pick a class and an attack strength. The top panel shows the class's mask — its weight row $W_k$,
# channels sorted from the largest weight down, suppressed channels (negative or at most 5 % of the
# largest weight) in grey. The two lower panels show the mean activation of that class's test images,
# natural (blue) and adversarial (red), before and after the mask. The title summarises accuracy, how
# often the auxiliary head picks the right mask, and how much activation falls on suppressed channels.
#
# Things to try: raise ε and watch the red curve in the middle panel spread into the grey channels; watch
# "right mask" drop — once the auxiliary head is fooled, the *wrong* class's row is applied.
# (The widget needs a running kernel; `explorer.update()` is the callback, so you can also drive it from code.)

# %%
explorer = widgets.ChannelExplorer(data_cas, ds.classes, class_id=0, eps=EPS)
explorer.widget

# %%
print("class 0 as ε grows (pre-mask change = Σ|adv − nat| / Σ nat):")
print(f"{'ε':>5} {'accuracy':>9} {'right mask':>11} {'pre-mask change':>16} {'adv. share on suppressed':>25}")
for eps in EPS_GRID:
    v = widgets.channel_view(data_cas, 0, eps)
    print(f"{eps:>5.2f} {v['accuracy_adversarial']:>9.0%} {v['right_mask_adversarial']:>11.0%} "
          f"{v['pre_mask_change']:>16.2f} {v['suppressed_share_adversarial']:>25.0%}")

# %% [markdown]
# ## 5 · The evaluation lesson: is CAS really robust?
#
# At test time the mask is chosen by an **argmax** over the auxiliary logits. An argmax has no gradient:
# a white-box attack that differentiates the model sees the mask as a constant and cannot learn to steer
# it. An attack on the main head alone may therefore *overestimate* robustness — the textbook symptom of
# **gradient masking**. We measure the AT+CAS model four ways, from the weakest to the most trustworthy:
#
# | attack | what it uses |
# |---|---|
# | PGD-20, main head (`ce`) | gradients of the main loss only |
# | PGD-20, adaptive (`ce+cas`) | main loss + β · auxiliary losses, so the attack also pushes the auxiliary head to pick a wrong mask (the official evaluation) |
# | Square | no gradients at all: random square-shaped changes, kept when the loss rises (black-box) |
# | AutoAttack | APGD-CE, APGD-T, FAB-T and Square, an ensemble designed to expose masking |
#
# **Reduced budget.** To fit a CPU we use `N_EVAL` = 100 test images and give Square `SQUARE_QUERIES` = 500
# queries (AutoAttack's default is 5,000), also inside AutoAttack, and run AutoAttack — by far the
# slowest check — on the CAS model only. With 100 images one image is one
# percentage point, so differences of a few points are within noise; the `gpu` profile uses all 359
# test images and the full budgets.

# %%
x_eval, y_eval = ds.test.x[:N_EVAL], ds.test.y[:N_EVAL]
reports = {   # AutoAttack (the slowest check) only for the CAS model, the one under suspicion
    "AT": evaluation.evaluate(at_model, x_eval, y_eval, EPS, attacks=("natural", "pgd20", "square"),
                              square_queries=SQUARE_QUERIES),
    "AT+CAS": evaluation.evaluate(cas_model, x_eval, y_eval, EPS, attacks=("natural", "pgd20", "square", "autoattack"),
                                  square_queries=SQUARE_QUERIES),
}
for name, report in reports.items():
    print(f"--- {name}\n{report.table()}\n")

# %%
plots.robustness_comparison_figure(reports, title=f"Accuracy of AT and AT+CAS under four attacks "
                                   f"(ε = {EPS}, {N_EVAL} test images, Square {SQUARE_QUERIES} queries)").show()

# %%
acc = reports["AT+CAS"].accuracy
main, adaptive = acc["pgd20"]["ce"], acc["pgd20"]["ce+cas"]
worst = pipeline.worst_case(reports["AT+CAS"])
print(f"AT+CAS: main-head PGD-20 says {main:.0%}, adaptive PGD-20 {adaptive:.0%}, Square {acc['square']['ce']:.0%}, "
      f"AutoAttack {acc['autoattack']['ce']:.0%}.")
print(f"The honest number is the worst case, {worst:.0%}; the main-head attack overstates it by {100 * (main - worst):.0f} points.")
print(f"AT for comparison (no AutoAttack): worst case {pipeline.worst_case(reports['AT']):.0%}.")

# %% [markdown]
# **What gradient masking looks like.** The library flags the usual symptoms in `report.warnings`:
#
# * a **black-box** attack (Square) or AutoAttack finds *lower* accuracy than white-box PGD — gradients
#   were misleading the white-box attack;
# * single-step FGSM beats multi-step PGD;
# * the main-head attack is weaker than the adaptive one (for CAS: the argmax mask hid part of the model).
#
# One more sanity check needs no comparison at all: with a huge budget (ε = 0.5 lets the attack paint
# most of a digit) any attack with useful gradients should drive accuracy to about zero.

# %%
for name, report in reports.items():
    print(f"{name}: " + ("; ".join(report.warnings) if report.warnings else "no masking warning"))
big = evaluation.evaluate(cas_model, x_eval, y_eval, 0.5, attacks=("pgd20",))
print(f"AT+CAS under main-head and adaptive PGD-20 at ε = 0.5: {big.accuracy['pgd20']['ce']:.0%} and "
      f"{big.accuracy['pgd20']['ce+cas']:.0%} accuracy")


# %% [markdown]
# **What the numbers say (our run: 100 images, reduced budget; read them off the tables above).** At ε = 0.1
# both models are very robust on digits, and the per-example worst cases of AT and AT+CAS lie within a couple
# of images of each other — with 100 images that is noise, so **CAS does not measurably improve the worst
# case** here. The main-head attack reports several points more than the adaptive one — the direction
# gradient masking predicts: an attack that cannot steer the auxiliary argmax misses errors. Square and
# AutoAttack (through the hard mask) find nothing that adaptive PGD-20 missed, so no warning fires, and the
# ε = 0.5 sanity check drives accuracy to about zero, as it should. The honest conclusion for this small
# problem: CAS neither helps nor hides a weakness *once the attack sees the auxiliary heads*. The paper's
# gains are reported for ResNet-18 on CIFAR-10, measured with the official (adaptive) attacks only;
# notebook 04's `gpu` profile runs that setting with the same checks plus a straight-through attack.

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
# auxiliary logit tensors.

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
# (which attacks the auxiliary head too) stronger than the main-head attack?

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution: scan the grid; 'right_mask_adversarial' is the fraction of images whose mask is their true class's row.
for k in range(len(ds.classes)):
    wrong = [e for e in EPS_GRID if widgets.channel_view(data_cas, k, e)["right_mask_adversarial"] < 0.5]
    print(f"class {k}: mask mostly wrong from ε = {wrong[0]}" if wrong else f"class {k}: mask right for most images up to ε = {EPS_GRID[-1]}")
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
# AutoAttack (with enough queries and examples). The number to quote is the **worst case** over all attacks
# (`pipeline.worst_case(report)`), and with 100 test images it carries about ±4–5 points of sampling noise.
