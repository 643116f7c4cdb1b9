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
# # 01 · Adversarial examples: FGSM, PGD and the L∞ budget ε
#
# A classifier that is right on almost every test image can be made wrong by changes to an image that a person would
# barely notice. Such inputs are **adversarial examples**. In this notebook we
#
# 1. state the **threat model**: what the attacker knows, what it wants and how much it may change;
# 2. train a small convolutional network on 8×8 handwritten digits (a few seconds on a laptop CPU);
# 3. attack it with the **Fast Gradient Sign Method (FGSM)**, then with **Projected Gradient Descent (PGD)**;
# 4. see why the budget ε is measured in the **L∞ norm** and what it allows, and why attacks run the model in
#    evaluation mode;
# 5. watch accuracy fall as ε grows, and play with an interactive ε slider;
# 6. write FGSM, the PGD projection, a targeted FGSM step and the choice among PGD's random restarts yourself, with
#    a checker that tells you whether they are right.
#
# Everything runs on a CPU. Later notebooks use these attacks to study the paper
# *Improving Adversarial Robustness via Channel-wise Activation Suppressing* (Bai et al., ICLR 2021).

# %% [markdown] tags=["launch"]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/cas_edu/blob/main/notebooks/student/01_adversarial_examples.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/cas_edu/main?urlpath=lab/tree/notebooks/student/01_adversarial_examples.ipynb)
#
# Run it online: Colab gives a free GPU (the set-up cell before the configuration installs cas_edu
# there), Binder JupyterLab on a CPU. Both badges open the student edition of this notebook.

# %% [markdown]
# ## The threat model
#
# A robustness number means nothing until we say what the attacker may do. These notebooks use the threat model of
# the CAS paper and of the work it builds on (Madry et al. 2018):
#
# * **White-box, and the attacker moves second.** The defender trains and fixes the model first. The attacker then
#   knows everything about it — architecture, weights, the defence itself — and may compute the gradient of any
#   quantity inside it. An attack designed with knowledge of the defence is called **adaptive** (Carlini et al. 2019;
#   Tramèr et al. 2020); notebook 03 shows why a CAS model needs one.
# * **Untargeted.** The attacker wins when the prediction is *any* class but the true label $y$, so it maximises the
#   loss of $y$. A **targeted** attacker must reach one chosen class $t \ne y$ and minimises the loss of $t$ instead:
#   every targeted success is also an untargeted one, so the targeted goal is the harder one. The attacks in these
#   notebooks are untargeted, except in Exercise 3, where you write a targeted step and measure how much harder it is.
# * **An L∞ budget ε.** Every pixel may change by at most ε (section 3 defines the norm). L∞ is a simple stand-in for
#   "imperceptible" — no single pixel changes much — and projecting onto it is a clip, which makes attacks cheap. It
#   is the budget of the CAS paper (ε = 8/255 on CIFAR-10) and of the attacks it is compared with. It is not the only
#   choice: L2 and L0 budgets, rotations or other perceptual changes have their own literature, and no norm ball
#   captures human perception exactly.
# * **ε = 0.1 on our digits is this course's choice, not a convention.** The 8×8 digits have 17 grey levels
#   (0, 1/16, …, 1), so ε = 0.1 lets every pixel move by about 1.6 levels. The conventions of the literature belong to
#   other datasets (8/255 for CIFAR-10, 0.3 for MNIST); we picked 0.1 as a budget at which a standard model breaks
#   while the digits stay recognisable — judge the second part yourself in the figures below. Exercise 5 asks what a
#   much larger budget would mean.
#
# **What an attack can and cannot prove.** An attack that fools the model on an image proves that this image is not
# robust; an attack that *fails* proves nothing, because a stronger attack might succeed. So the accuracy measured
# under an attack is an **upper bound** on the true robust accuracy (the share of images for which *no* perturbation
# within ε changes the prediction), and a stronger attack can only lower it. Lower bounds come from **certification**
# (for example Wong & Kolter 2018), which proves image by image that no perturbation within ε changes the prediction:
#
# $$\text{certified accuracy} \;\le\; \text{true robust accuracy} \;\le\; \text{accuracy under any attack}.$$
#
# These notebooks only attack, so every robust accuracy they print is an upper bound — which is why notebook 03
# works hard to make its attacks strong.

# %% [markdown]
# ## Configuration
#
# All the knobs sit in the configuration cell, after the Colab set-up cell. `PROFILE` comes from the environment variable `CAS_EDU_PROFILE`, the same
# three names in every notebook of the course:
#
# * **`cpu`** (the default, and what the automated tests run) keeps everything small;
# * **`colab`** runs the same small settings on a hosted notebook (a Colab GPU makes them faster);
# * **`gpu`** trains longer and evaluates on the whole test split.
#
# Any other name stops the configuration cell (the one after the Colab set-up cell) with an error that names the valid ones.
# `DEVICE = "auto"` picks a GPU when there is one and the CPU otherwise.

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

PROFILE = presets.get_profile(os.environ.get("CAS_EDU_PROFILE", "cpu")).name  # cpu (default), colab or gpu
DATASET = "digits"                                    # scikit-learn's 8×8 digits: no download needed
EPS = 0.1                                             # L∞ budget: every pixel may move by at most 0.1
EPOCHS = 12 if PROFILE == "gpu" else 6                # standard training epochs
N_EVAL = None if PROFILE == "gpu" else 200            # test images for the accuracy curve (None = all)
DEVICE = "auto"                                       # "auto": CUDA, then MPS, then CPU
SEED = 0

# %%
import torch

from cas_edu import attacks, data, evaluation, exercises, plots, presets, training, widgets
from cas_edu.runtime import resolve_device, seed_everything

seed_everything(SEED)
device = resolve_device(DEVICE)
print("running on", device.type)

# %% [markdown]
# ## 1 · The data: 8×8 digits with pixels in [0, 1]
#
# `data.load` returns train / validation / test splits. Images are tensors shaped `N × C × H × W`
# (here one gray channel of 8×8 pixels) with values in **[0, 1]**: 0 is white paper, 1 is full ink.
# That range matters: an attack must produce a valid image, so it can never push a pixel below 0 or above 1.

# %%
# NBVAL_CHECK_OUTPUT
ds = data.load(DATASET)
print("train", tuple(ds.train.x.shape), "| val", tuple(ds.val.x.shape), "| test", tuple(ds.test.x.shape))
print("classes:", ds.classes)
print("pixel values from", ds.train.x.min().item(), "to", ds.train.x.max().item())

# %%
plots.image_grid_figure({"digit": ds.test.x[:10]}, column_titles=[f"label {int(c)}" for c in ds.test.y[:10]],
                        title="Ten test digits (dark = ink)")

# %% [markdown]
# ## 2 · A standard classifier
#
# We train `SmallCNN` (three conv–BatchNorm–ReLU blocks, a global average pool and a linear layer) with plain
# cross-entropy: no defence of any kind. `training.train_or_load` reuses a finished run from `runs/<profile>/` when one
# with exactly this configuration exists, so re-running the notebook is instant.

# %%
config = presets.make_config(DATASET, method="standard", epochs=EPOCHS, seed=SEED, device=DEVICE)
model, history = training.train_or_load(config, f"runs/{PROFILE}/{DATASET}_standard", progress=True, dataset=ds)
print(f"natural test accuracy: {evaluation.wilson_interval(evaluation.accuracy(model, ds.test.x, ds.test.y))}")

# %% [markdown]
# **Reading an accuracy.** The test images are a sample, so an accuracy measured on them is an estimate. The brackets
# after it are a **95 % confidence interval** and `n` is the number of images behind it: the accuracies the data
# cannot rule out. `evaluation.accuracy` returns one True/False per image and `evaluation.wilson_interval` turns them
# into the line above, with Wilson's score interval, which behaves well for small `n` and for accuracies near 0 % or
# 100 % (the textbook "± 1.96 standard errors" does not). Every accuracy this course draws a conclusion from is
# printed that way. When two models or two attacks are compared *on the same images*, the course prints the difference
# with a **paired** interval (`evaluation.paired_interval`): it counts the images on which exactly one of the two is
# right, and is usually narrower than the two separate intervals suggest, because both numbers share the luck of the
# same sample.

# %% [markdown]
# ## 3 · What is an adversarial example?
#
# Let $f$ be the classifier, $x$ an image with label $y$ and $\mathcal{L}(f(x), y)$ the cross-entropy loss.
# An adversarial example is an image $x'$ that
#
# $$\|x' - x\|_\infty \le \varepsilon, \qquad x' \in [0, 1]^d, \qquad f(x') \ne y .$$
#
# The **L∞ norm** $\|\delta\|_\infty = \max_i |\delta_i|$ is the largest change of any single pixel. So the budget
# says: *each pixel may move by at most ε, and all of them may move at once*. The set of allowed images is a small
# hypercube around $x$. With pixels in [0, 1] and ε = 0.1, no pixel changes by more than a tenth of the range from
# paper to ink; the figures below let you judge whether the digit stays the same digit to a human.
#
# (Other threat models use the L2 norm, $\|\delta\|_2 = \sqrt{\sum_i \delta_i^2}$, which limits the *total* energy of
# the change instead. The CAS paper, and these notebooks, use L∞.)
#
# ## 4 · FGSM: one step along the sign of the gradient
#
# To fool the model we want to *increase* the loss. Near $x$ the loss is roughly linear,
# $\mathcal{L}(x + \delta) \approx \mathcal{L}(x) + \delta^\top g$ with $g = \nabla_x \mathcal{L}(f(x), y)$.
# Maximising $\delta^\top g$ subject to $\|\delta\|_\infty \le \varepsilon$ has a closed-form answer: push every pixel
# to the edge of its allowed interval, in the direction the gradient points, $\delta = \varepsilon \cdot \operatorname{sign}(g)$.
# That is FGSM (Goodfellow et al., 2015), followed by a clamp to stay a valid image:
#
# $$x' = \operatorname{clip}_{[0,1]}\big(x + \varepsilon \cdot \operatorname{sign}(\nabla_x \mathcal{L}(f(x), y))\big).$$
#
# Let us attack eight test digits and look at the three pieces: the clean image, the perturbation δ and the result.

# %%
x, y = ds.test.x[:8].to(device), ds.test.y[:8].to(device)
x_fgsm = attacks.fgsm(model, x, y, EPS)
delta = x_fgsm - x
with torch.no_grad():
    pred_clean, pred_fgsm = model(x).argmax(1), model(x_fgsm).argmax(1)
titles = [f"{int(a)}: {int(b)} → {int(c)}" for a, b, c in zip(y, pred_clean, pred_fgsm)]
plots.image_grid_figure({"clean x": x, "δ (red +, blue −)": delta, "FGSM x'": x_fgsm}, column_titles=titles,
                        diverging=["δ (red +, blue −)"],
                        title=f"FGSM with ε = {EPS}: column title = label: prediction on x → prediction on x'")

# %% [markdown]
# The budget is respected exactly: the next cell checks it. FGSM *tries* to move every pixel by ±ε, but two things
# stop some pixels: a pixel whose gradient is exactly zero does not move ($\operatorname{sign}(0) = 0$), and the clamp
# to [0, 1] shortens the step of a pixel pushed outward (a paper pixel at 0 pushed down stays at 0; one at 0.95 pushed
# up moves by 0.05 only). The cell after next counts how many pixels moved at all and how many of those by exactly ε.
# It also prints both norms of δ: a perturbation that moves $m$ pixels by ε each has $\|\delta\|_\infty = \varepsilon$
# but $\|\delta\|_2 = \varepsilon\sqrt{m}$ — up to $0.1 \cdot \sqrt{64} = 0.8$ for an 8×8 digit. An L∞ budget allows
# many small changes at once.

# %%
# NBVAL_CHECK_OUTPUT
print("‖δ‖∞ ≤ ε for every image:", bool(delta.abs().amax(dim=(1, 2, 3)).le(EPS + 1e-6).all()))
print("all pixels still in [0, 1]:", bool(x_fgsm.min() >= 0 and x_fgsm.max() <= 1))

# %%
moved = delta.abs() > 1e-6
print(f"pixels moved: {moved.float().mean():.0%}, of those by exactly ε: {(delta.abs()[moved] - EPS).abs().lt(1e-6).float().mean():.0%}")
print(f"mean ‖δ‖∞ = {delta.abs().amax(dim=(1, 2, 3)).mean():.3f}, mean ‖δ‖₂ = {delta.flatten(1).norm(dim=1).mean():.3f}")

# %% [markdown]
# ## 5 · PGD: many small steps, projected back into the budget
#
# FGSM trusts a linear approximation of the loss for one big step. **PGD** (Madry et al., 2018) takes $T$ smaller
# steps of size α, and after each one *projects* back onto the allowed set — the ε-cube around $x$ intersected
# with the valid image range:
#
# $$x^{t+1} = \Pi_{x,\varepsilon}\Big(x^t + \alpha \cdot \operatorname{sign}\big(\nabla_x \mathcal{L}(f(x^t), y)\big)\Big),
# \qquad \Pi_{x,\varepsilon}(z) = \operatorname{clip}_{[0,1]}\big(\operatorname{clip}_{[x-\varepsilon,\,x+\varepsilon]}(z)\big).$$
#
# It starts from a random point in the cube, $x^0 = x + U(-\varepsilon, \varepsilon)$. `attacks.pgd` defaults to
# 10 steps with α = 2.5·ε/10, so the iterates can cross the whole cube. Because PGD follows the loss surface as it
# bends, it usually finds adversarial examples FGSM misses, and it is the standard *strong* first-order attack. The
# next cell measures both on the same images: compare the two printed accuracies, and read the paired line under them
# for whether their difference is more than the luck of the sample.

# %%
x_eval = ds.test.x if N_EVAL is None else ds.test.x[:N_EVAL]
y_eval = ds.test.y if N_EVAL is None else ds.test.y[:N_EVAL]
xe, ye = x_eval.to(device), y_eval.to(device)
x_pgd = attacks.pgd(model, xe, ye, EPS, steps=10)
natural_correct = evaluation.accuracy(model, xe, ye)           # one True/False per image
fgsm_correct = evaluation.accuracy(model, attacks.fgsm(model, xe, ye, EPS), ye)
pgd_correct = evaluation.accuracy(model, x_pgd, ye)
print(f"on {len(xe)} test images at ε = {EPS} (accuracy, 95 % Wilson interval):")
print(f"  natural accuracy {evaluation.wilson_interval(natural_correct).format(show_n=False)}")
print(f"  FGSM accuracy    {evaluation.wilson_interval(fgsm_correct).format(show_n=False)}")
print(f"  PGD-10 accuracy  {evaluation.wilson_interval(pgd_correct).format(show_n=False)}")
pgd_minus_fgsm = evaluation.paired_interval(pgd_correct, fgsm_correct)   # same images, so a paired interval
print(f"  PGD-10 − FGSM:   {pgd_minus_fgsm}")
print("-> " + ("PGD-10 finds errors FGSM misses (the interval lies below 0)" if pgd_minus_fgsm.high < 0 else
               "FGSM finds more errors than PGD-10 here (the interval lies above 0)" if pgd_minus_fgsm.low > 0 else
               "no resolved difference between PGD-10 and FGSM on these images (the interval contains 0)"))

# %%
# NBVAL_CHECK_OUTPUT
print("PGD stays inside the budget:", bool((x_pgd - xe).abs().max() <= EPS), "| valid images:",
      bool(x_pgd.min() >= 0 and x_pgd.max() <= 1))

# %% [markdown]
# ### Why attacks run the model in evaluation mode
#
# `SmallCNN` has BatchNorm layers. In *training* mode a BatchNorm layer normalises each channel with the mean and
# variance of the current batch and updates its running statistics with every forward pass; in *evaluation* mode it
# uses the running statistics saved by training. An attack must attack the model that is deployed — the
# evaluation-mode one — for two reasons, which the next cell shows on a copy of our model:
#
# 1. in training mode an image's logits depend on the other images in its batch, so the model under attack would not
#    be a fixed function of the image;
# 2. every training-mode forward pass moves the running statistics, so an attack run in training mode would change
#    the model it attacks — towards the statistics of adversarial images.
#
# So every attack in `cas_edu.attacks` switches the model to evaluation mode while it runs and then gives every layer
# back its previous mode. (For a CAS model, evaluation mode also decides how the mask is chosen: notebook 03.)

# %%
import copy

probe = copy.deepcopy(model)   # a copy: this cell must not change the model we attack
batchnorms = [m for m in probe.modules() if isinstance(m, torch.nn.BatchNorm2d)]
with torch.no_grad():
    probe.eval()
    eval_alone, eval_in_batch = probe(x[:1]), probe(x)[:1]
    probe.train()
    train_clean_mates, train_adversarial_mates = probe(x)[:1], probe(torch.cat([x[:1], x_fgsm[1:]]))[:1]
    variances_before = [m.running_var.clone() for m in batchnorms]
    for _ in range(10):        # as many training-mode passes as a PGD-10 attack would make
        probe(x_pgd)
drift = max(float(((m.running_var - before) / before).abs().max()) for m, before in zip(batchnorms, variances_before))
print("evaluation mode: image 0's logits are the same alone and in a batch:",
      torch.allclose(eval_alone, eval_in_batch, atol=1e-5))
print(f"training mode: image 0's logits change by up to {(train_clean_mates - train_adversarial_mates).abs().max():.2f} "
      "when its seven batch-mates are replaced by their FGSM versions")
print(f"10 training-mode passes over the PGD images (as many as PGD-10 makes) moved the BatchNorm running variances "
      f"by up to {drift:.0%}")

# %% [markdown]
# ## 6 · Robust accuracy as ε grows
#
# *Natural accuracy* is measured on clean images; *robust accuracy* on adversarial ones, crafted within budget ε.
# At ε = 0 they coincide; as ε grows the attacker gets more room and robust accuracy falls.
# The curve below shows both attacks on the same images. Look for two things: how fast the standard model's accuracy
# falls as ε grows, and whether PGD pushes it further down than FGSM at each ε. The error bars are each point's 95 %
# Wilson interval (`evaluation.robustness_curve` returns the counts behind every point, `curve["n_correct"]`).
# The curve draws its own random starts for PGD, so its point at ε = 0.1 can differ a little from section 5's.

# %%
EPS_GRID = [i / 40 for i in range(13)] if PROFILE == "gpu" else [0.0, 0.05, 0.1, 0.15, 0.2]
curve = evaluation.robustness_curve(model, x_eval, y_eval, EPS_GRID, steps=10, seed=SEED)
plots.accuracy_vs_eps_figure({"standard model": curve},
                             title=f"Standard model: accuracy vs ε on {curve['n']} test digits")

# %%
# NBVAL_CHECK_OUTPUT
print("ε grid:", curve["eps"])
print("FGSM at ε = 0 equals natural accuracy:", curve["fgsm"][0] == curve["natural"])

# %% [markdown]
# ## 7 · Interactive: move ε and watch one digit break
#
# The explorer below attacks one test image at a time. Move the **ε slider**, switch between **FGSM** and **PGD-10**,
# and pick another **example**. The four panels show the clean image, the perturbation δ (on a fixed colour scale
# from −0.3 to +0.3, so you see it grow), the adversarial image, and the model's class probabilities before and after.
#
# Things to try: find the smallest ε that flips example 0, for FGSM and for PGD — which needs less? Look at where
# PGD's perturbation is largest compared with the strokes of the digit.
#
# The widget needs a running kernel: a static view of this notebook (GitHub, nbviewer, a course site) cannot draw
# it, and shows instead the picture of its initial view under it.

# %%
explorer = widgets.EpsilonExplorer(model, ds.test.x[:50], ds.test.y[:50], ds.classes, eps=EPS, eps_max=0.3)
explorer.widget

# %% [markdown]
# For a reader without a running kernel (GitHub, nbviewer, the course site): a static picture of the explorer's
# initial view. Running the notebook, the explorer above is the one to use.

# %%
explorer.snapshot().show()

# %% [markdown]
# Behind the widget is a plain function, `widgets.epsilon_view`, which returns the arrays the figure shows.
# Tests (and you) can call it without any widget:

# %%
# NBVAL_CHECK_OUTPUT
view = widgets.epsilon_view(model, ds.test.x[0], ds.test.y[0], eps=0.2, attack="pgd")
print(sorted(view))
print("perturbation shape:", view["perturbation"].shape, "| ‖δ‖∞ ≤ 0.2:", view["linf"] <= 0.2 + 1e-6)


# %% [markdown]
# ## Exercises
#
# Each coding exercise comes with a checker from `cas_edu.exercises`: it runs your function on a few fresh random
# inputs (and fresh small models, where the exercise needs one), compares it with the library, and answers in one
# line. A worked solution sits in the collapsed cell below each exercise (click the three dots to expand it) — try
# first!
#
# ### Exercise 1 · FGSM by hand
#
# Write `my_fgsm(model, x, y, eps)` returning $\operatorname{clip}_{[0,1]}(x + \varepsilon\,\operatorname{sign}(\nabla_x \mathcal{L}))$
# with the cross-entropy loss. The model arrives in evaluation mode. Hints: `x.clone().requires_grad_(True)`,
# `torch.nn.functional.cross_entropy`, `torch.autograd.grad`, `.sign()`, `.clamp(0, 1)`.

# %%
def my_fgsm(model, x, y, eps):
    # your code here
    raise NotImplementedError("write FGSM here")


exercises.check_fgsm(my_fgsm);

# %% jupyter={"source_hidden": true} tags=["solution"]
# Worked solution
import torch.nn.functional as F


def my_fgsm(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


exercises.check_fgsm(my_fgsm);


# %% [markdown]
# ### Exercise 2 · The PGD projection
#
# Write `my_project(x_adv, x, eps)` that returns the point of the allowed set closest to `x_adv`: first clip every
# pixel into $[x - \varepsilon, x + \varepsilon]$, then into $[0, 1]$. (For an L∞ ball, clipping coordinate by
# coordinate *is* the Euclidean projection — one of the reasons L∞ attacks are so convenient.)

# %%
def my_project(x_adv, x, eps):
    # your code here
    raise NotImplementedError("write the projection here")


exercises.check_pgd_projection(my_project);


# %% jupyter={"source_hidden": true} tags=["solution"]
# Worked solution
def my_project(x_adv, x, eps):
    x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps)
    return x_adv.clamp(0, 1)


exercises.check_pgd_projection(my_project);


# %% [markdown]
# ### Exercise 3 · A targeted attack, and random restarts
#
# **(a) A targeted FGSM step.** A targeted attacker wants one chosen class $t$ (the threat model at the top), so it
# walks *down* the loss of $t$ instead of up the loss of $y$:
#
# $$x' = \operatorname{clip}_{[0,1]}\big(x - \varepsilon \cdot \operatorname{sign}(\nabla_x \mathcal{L}(f(x), t))\big).$$
#
# Write `my_targeted_fgsm(model, x, target, eps)`. It differs from Exercise 1 in two places: the labels are the
# targets, and the sign of the step.

# %%
def my_targeted_fgsm(model, x, target, eps):
    # your code here
    raise NotImplementedError("write the targeted FGSM step here")


exercises.check_targeted_fgsm(my_targeted_fgsm);


# %% jupyter={"source_hidden": true} tags=["solution"]
# Worked solution
def my_targeted_fgsm(model, x, target, eps):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), target)
    (grad,) = torch.autograd.grad(loss, x)
    return (x - eps * grad.sign()).clamp(0, 1).detach()


exercises.check_targeted_fgsm(my_targeted_fgsm);


# %% [markdown]
# **(b) Random restarts.** PGD starts from a random point of the ε-cube, and another start can end somewhere else: an
# image that survives one run may fall to the next. So a stronger evaluation runs PGD several times and keeps, per
# image, the worst case over the runs (Madry et al. 2018). Write `my_select_restart(model, candidates, y)`: given the
# adversarial images of several restarts (a list of tensors shaped like `x`) and the true labels, return for every
# image the version of one restart that the model misclassifies, whenever any restart's version is misclassified.
# The choice is per image: no single restart need be the best for all of them. Hints: `torch.stack`, `.argmax`,
# indexing with two index tensors.

# %%
def my_select_restart(model, candidates, y):
    # your code here
    raise NotImplementedError("choose one restart per image here")


exercises.check_restart_selection(my_select_restart);


# %% jupyter={"source_hidden": true} tags=["solution"]
# Worked solution
def my_select_restart(model, candidates, y):
    stacked = torch.stack(candidates)                                      # (restarts, N, C, H, W)
    with torch.no_grad():
        fooled = torch.stack([model(c).argmax(1) != y for c in candidates])   # (restarts, N)
    pick = fooled.int().argmax(0)   # per image, the first restart that fools the model (restart 0 if none does)
    return stacked[pick, torch.arange(len(y))]


exercises.check_restart_selection(my_select_restart);

# %% [markdown]
# The library does both: `attacks.pgd(..., targeted=True)` walks towards the classes you pass as labels, and
# `attacks.pgd(..., restarts=5)` keeps the worst of five random starts per image (the first start is the one
# `restarts=1` draws, so five restarts can only find more). The next cell measures both on section 5's images and
# attack (PGD-10 at ε): how often a targeted PGD-10 reaches one fixed class, next to how often the untargeted one
# fools the model on the same images, and the robust accuracy with one start and with five (drawn afresh, so the
# one-start number may differ a little from section 5's).

# %%
TARGET_CLASS = 0   # the class the targeted attack aims for (try others); images of that class are left out
aimed = ye != TARGET_CLASS
target = torch.full_like(ye[aimed], TARGET_CLASS)
x_targeted = attacks.pgd(model, xe[aimed], target, EPS, steps=10, targeted=True)
reached = evaluation.accuracy(model, x_targeted, target)   # "accuracy" against the targets = targeted success
fooled = ~pgd_correct[aimed.cpu()]                          # untargeted PGD-10 of section 5, same images
print(f"on the {int(aimed.sum())} images not labelled {TARGET_CLASS}, at ε = {EPS}:")
print(f"  targeted PGD-10 reaches class {TARGET_CLASS}: {evaluation.wilson_interval(reached).format(show_n=False)}")
print(f"  untargeted PGD-10 fools the model: {evaluation.wilson_interval(fooled).format(show_n=False)}")
targeted_minus_untargeted = evaluation.paired_interval(reached, fooled)
print(f"  targeted − untargeted success: {targeted_minus_untargeted}")
print("-> " + ("reaching one chosen class is harder than reaching any wrong class (the interval lies below 0)"
               if targeted_minus_untargeted.high < 0 else
               "no resolved difference between the targeted and the untargeted success here"))


def pgd10(restarts):
    return lambda m, xb, yb: attacks.pgd(m, xb, yb, EPS, steps=10, restarts=restarts)


# the same seed and one batch for all images: five restarts begin with the start of the single one
one_start = evaluation.accuracy(model, xe, ye, pgd10(1), seed=SEED, batch_size=len(ye))
five_starts = evaluation.accuracy(model, xe, ye, pgd10(5), seed=SEED, batch_size=len(ye))
print(f"robust accuracy on all {len(ye)} images under PGD-10 from 1 start: "
      f"{evaluation.wilson_interval(one_start).format(show_n=False)}, from 5: "
      f"{evaluation.wilson_interval(five_starts).format(show_n=False)}")
restart_gain = evaluation.paired_interval(five_starts, one_start)
print(f"  5 starts − 1 start: {restart_gain}")
print("-> " + ("the restarts break images a single start left standing (the interval lies below 0)"
               if restart_gain.high < 0 else
               "no resolved difference: on these images one start of PGD-10 already finds about as much as five"))


# %% [markdown]
# ### Exercise 4 · The smallest ε that fools the model
#
# With the widget, find for examples 0–4 the smallest ε (to 0.01) at which FGSM flips the prediction, and the same for
# PGD-10. Is PGD's threshold ever larger than FGSM's? Why could FGSM *fail* at a large ε after succeeding at a smaller
# one? The solution scans ε with the widget's own function; it stops at the first ε that fools the model, so it
# answers the second question in words, not with a measurement.

# %% jupyter={"source_hidden": true} tags=["solution"]
# Worked solution: scan ε on a grid with the same function the widget uses.
def smallest_fooling_eps(index, attack, grid=[i / 100 for i in range(1, 31)]):
    for eps in grid:
        v = widgets.epsilon_view(model, ds.test.x[index], ds.test.y[index], eps, attack)
        if v["pred_adversarial"] != v["label"]:
            return eps
    return None


thresholds = {index: (smallest_fooling_eps(index, "fgsm"), smallest_fooling_eps(index, "pgd")) for index in range(5)}
for index, (fgsm_eps, pgd_eps) in thresholds.items():
    print(f"example {index}: FGSM flips at ε = {fgsm_eps}, PGD-10 at ε = {pgd_eps}  (None: not up to 0.3)")
never = 1.0  # an example never flipped counts as flipped beyond the grid
larger = sum((pgd_eps or never) > (fgsm_eps or never) for fgsm_eps, pgd_eps in thresholds.values())
print(f"PGD-10 needed a larger ε than FGSM on {larger} of {len(thresholds)} examples")
# PGD follows the loss as it bends, so it usually needs no larger ε than FGSM — but nothing guarantees it: PGD
# starts from a random point and takes smaller steps (the line above counts the exceptions here). FGSM is a
# single linear guess; at large ε the loss is far from linear, so a larger step can overshoot into a region the
# model still classifies correctly: FGSM's success need not be monotone in ε.

# %% [markdown]
# ### Exercise 5 · Think about the budget
#
# ε = 0.1 fools the standard model on many digits. Would ε = 0.5 be a fair test of robustness? What could an attacker
# do to a digit with a budget of 0.5 per pixel? (Answer in the collapsed cell below.)

# %% [markdown] jupyter={"source_hidden": true} tags=["solution"]
# *Worked answer:* with ε = 0.5 every pixel can move half-way between paper and ink — enough to erase strokes and draw new
# ones, so the "adversarial" image may truly be another digit. A robustness claim only makes sense for budgets small
# enough that the true label cannot change. That is why the literature fixes an ε per dataset (8/255 for CIFAR-10,
# 0.3 for MNIST) and why a result must always state its ε; for these 8×8 digits there is no such convention, and
# 0.1 is this course's choice (see the threat model at the top).

# %% [markdown]
# **Next:** `02_channel_activation_statistics.ipynb` looks *inside* the network: which channels adversarial examples
# switch on, and how adversarial training changes that.

# %% [markdown]
# ## References
#
# * Y. Bai, Y. Zeng, Y. Jiang, S.-T. Xia, X. Ma, Y. Wang. *Improving Adversarial Robustness via Channel-wise
#   Activation Suppressing.* ICLR 2021. arXiv:2103.08307. Official code: github.com/bymavis/CAS_ICLR2021.
# * I. J. Goodfellow, J. Shlens, C. Szegedy. *Explaining and Harnessing Adversarial Examples.* ICLR 2015 (FGSM).
# * A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu. *Towards Deep Learning Models Resistant to Adversarial
#   Attacks.* ICLR 2018 (PGD, adversarial training).
# * H. Zhang, Y. Yu, J. Jiao, E. P. Xing, L. El Ghaoui, M. I. Jordan. *Theoretically Principled Trade-off between
#   Robustness and Accuracy.* ICML 2019 (TRADES).
# * Y. Wang, D. Zou, J. Yi, J. Bailey, X. Ma, Q. Gu. *Improving Adversarial Robustness Requires Revisiting
#   Misclassified Examples.* ICLR 2020 (MART).
# * A. Athalye, N. Carlini, D. Wagner. *Obfuscated Gradients Give a False Sense of Security: Circumventing Defenses to
#   Adversarial Examples.* ICML 2018 (gradient masking, BPDA).
# * N. Carlini, A. Athalye, N. Papernot, W. Brendel, J. Rauber, D. Tsipras, I. Goodfellow, A. Madry, A. Kurakin.
#   *On Evaluating Adversarial Robustness.* arXiv:1902.06705, 2019.
# * F. Tramèr, N. Carlini, W. Brendel, A. Madry. *On Adaptive Attacks to Adversarial Example Defenses.* NeurIPS 2020.
# * F. Croce, M. Hein. *Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free
#   Attacks.* ICML 2020 (AutoAttack).
# * E. Wong, J. Z. Kolter. *Provable Defenses against Adversarial Examples via the Convex Outer Adversarial
#   Polytope.* ICML 2018 (certification).
