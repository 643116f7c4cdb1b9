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
# A classifier that is right 99 % of the time can be made wrong by changes to an image that a person would barely notice.
# Such inputs are **adversarial examples**. In this notebook we
#
# 1. train a small convolutional network on 8×8 handwritten digits (in the notebook, about ten seconds on a laptop CPU);
# 2. attack it with the **Fast Gradient Sign Method (FGSM)**, then with **Projected Gradient Descent (PGD)**;
# 3. see why the budget ε is measured in the **L∞ norm** and what it allows;
# 4. watch accuracy fall as ε grows, and play with an interactive ε slider;
# 5. write FGSM and the PGD projection yourself, with a checker that tells you whether they are right.
#
# Everything runs on a CPU. Later notebooks use these attacks to study the paper
# *Improving Adversarial Robustness via Channel-wise Activation Suppressing* (Bai et al., ICLR 2021).

# %% [markdown]
# ## Configuration
#
# All the knobs sit in the next cell. `PROFILE` comes from the environment variable `CAS_EDU_PROFILE`, the same
# three names in every notebook of the course:
#
# * **`cpu`** (the default, and what the automated tests run) keeps everything small;
# * **`colab`** runs the same small settings on a hosted notebook (a Colab GPU makes them faster);
# * **`gpu`** trains longer and evaluates on the whole test split.
#
# Any other name stops the next cell with an error that names the valid ones.
# `DEVICE = "auto"` picks a GPU when there is one and the CPU otherwise.

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
print(f"natural test accuracy: {training.accuracy(model, ds.test.x, ds.test.y):.1%}")

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
# paper to ink — the digit stays obviously the same digit to a human.
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
# The budget is respected exactly, and FGSM spends all of it: every pixel it moves, it moves by ±ε
# (pixels already at 0 or 1 that the gradient pushes outward stay where they are because of the clamp).
# Note how much larger the L2 norm is than ε — an L∞ budget allows many small changes at once.

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
# bends, it usually finds adversarial examples FGSM misses: it is the standard *strong* attack.

# %%
x_eval = ds.test.x if N_EVAL is None else ds.test.x[:N_EVAL]
y_eval = ds.test.y if N_EVAL is None else ds.test.y[:N_EVAL]
xe, ye = x_eval.to(device), y_eval.to(device)
x_pgd = attacks.pgd(model, xe, ye, EPS, steps=10)
print(f"on {len(xe)} test images at ε = {EPS}:")
print(f"  natural accuracy {training.accuracy(model, xe, ye):.1%}")
print(f"  FGSM accuracy    {training.accuracy(model, attacks.fgsm(model, xe, ye, EPS), ye):.1%}")
print(f"  PGD-10 accuracy  {training.accuracy(model, x_pgd, ye):.1%}")

# %%
# NBVAL_CHECK_OUTPUT
print("PGD stays inside the budget:", bool((x_pgd - xe).abs().max() <= EPS), "| valid images:",
      bool(x_pgd.min() >= 0 and x_pgd.max() <= 1))

# %% [markdown]
# ## 6 · Robust accuracy as ε grows
#
# *Natural accuracy* is measured on clean images; *robust accuracy* on adversarial ones, crafted within budget ε.
# At ε = 0 they coincide; as ε grows the attacker gets more room and robust accuracy falls.
# The curve below shows both attacks on the same images. Look for two things: how fast the standard model collapses,
# and how much further down PGD pushes it than FGSM.

# %%
EPS_GRID = [0.0, 0.05, 0.1, 0.15, 0.2] if PROFILE == "cpu" else [i / 40 for i in range(13)]
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
# Things to try: find the smallest ε that flips example 0; check that PGD flips it at a smaller ε than FGSM;
# look at *where* the perturbation concentrates (hint: on the strokes and just beside them).
#
# The widget needs a running kernel; in a static view you see its last state.

# %%
explorer = widgets.EpsilonExplorer(model, ds.test.x[:50], ds.test.y[:50], ds.classes, eps=EPS, eps_max=0.3)
explorer.widget

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
# Each coding exercise comes with a checker from `cas_edu.exercises`: it runs your function on fresh random inputs
# and a fresh small model, compares it with the library, and answers in one line. A worked solution sits in the
# collapsed cell below each exercise (click the three dots to expand it) — try first!
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
# ### Exercise 3 · The smallest ε that fools the model
#
# With the widget, find for examples 0–4 the smallest ε (to 0.01) at which FGSM flips the prediction, and the same for
# PGD-10. Is PGD's threshold ever larger than FGSM's? Why can FGSM *fail* at a large ε after succeeding at a smaller one?
# The solution scans ε with the widget's own function.

# %% jupyter={"source_hidden": true} tags=["solution"]
# Worked solution: scan ε on a grid with the same function the widget uses.
def smallest_fooling_eps(index, attack, grid=[i / 100 for i in range(1, 31)]):
    for eps in grid:
        v = widgets.epsilon_view(model, ds.test.x[index], ds.test.y[index], eps, attack)
        if v["pred_adversarial"] != v["label"]:
            return eps
    return None


for index in range(5):
    print(f"example {index}: FGSM flips at ε = {smallest_fooling_eps(index, 'fgsm')}, "
          f"PGD-10 at ε = {smallest_fooling_eps(index, 'pgd')}")
# PGD is (almost) never worse: it can take the FGSM step and then improve on it. FGSM is a single linear
# guess; at large ε the loss is far from linear, so a larger step can overshoot into a region the model
# still classifies correctly — FGSM's success is not monotone in ε, PGD's nearly is.

# %% [markdown]
# ### Exercise 4 · Think about the budget
#
# ε = 0.1 fools the standard model on many digits. Would ε = 0.5 be a fair test of robustness? What could an attacker
# do to a digit with a budget of 0.5 per pixel? (Answer in the collapsed cell below.)

# %% [markdown] jupyter={"source_hidden": true} tags=["solution"]
# *Worked answer:* with ε = 0.5 every pixel can move half-way between paper and ink — enough to erase strokes and draw new
# ones, so the "adversarial" image may truly be another digit. A robustness claim only makes sense for budgets small
# enough that the true label cannot change; that is why datasets come with conventional ε values (8/255 for CIFAR-10,
# 0.3 for MNIST, 0.1 for these coarser 8×8 digits).

# %% [markdown]
# **Next:** `02_channel_activation_statistics.ipynb` looks *inside* the network: which channels adversarial examples
# switch on, and how adversarial training changes that.
