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
# Adversarial training (AT) removes most of (1) but not (2), and Channel-wise Activation Suppressing targets (2).
# Here we compute the paper's own two quantities for a **standard (STD)** and an **adversarially trained (AT)**
# small CNN on 8×8 digits, and look honestly at what our data shows — including where it differs from the paper's
# ResNet-18 on CIFAR-10.

# %% [markdown]
# ## Configuration
#
# `PROFILE = "cpu"` (default, used by the tests) trains small models and uses 200 test images; `CAS_EDU_PROFILE=full`
# trains with the library's full `fast` preset and uses every test image. The standard model is the one notebook 01
# trained (same configuration, same folder), so it is reused when you ran 01 first.

# %%
import os

PROFILE = os.environ.get("CAS_EDU_PROFILE", "cpu")   # "cpu" = small and quick (tests), "full" = longer
DATASET = "digits"
EPS = 0.1                                              # L∞ budget of the PGD attack (and of adversarial training)
EPOCHS = 6 if PROFILE == "cpu" else 12                 # standard-training epochs (same run as notebook 01)
AT_EPOCHS = 5 if PROFILE == "cpu" else 12              # adversarial-training epochs
AT_STEPS = 3 if PROFILE == "cpu" else 10               # PGD steps inside adversarial training
PGD_STEPS = 10 if PROFILE == "cpu" else 20             # PGD steps for the statistics (the paper uses 20)
N_EVAL = 200 if PROFILE == "cpu" else None             # test images analysed (None = all 359)
CLASS_ID = 0                                           # the paper analyses class 0
DEVICE = "auto"
SEED = 0

# %%
import torch

from cas_edu import activations, data, evaluation, exercises, plots, presets, training, widgets
from cas_edu.runtime import resolve_device, seed_everything

seed_everything(SEED)
device = resolve_device(DEVICE)
ds = data.load(DATASET)
x_eval = ds.test.x if N_EVAL is None else ds.test.x[:N_EVAL]
y_eval = ds.test.y if N_EVAL is None else ds.test.y[:N_EVAL]
print("running on", device.type)

# %%
# NBVAL_CHECK_OUTPUT
print("images analysed:", tuple(x_eval.shape))
print("examples per class:", torch.bincount(y_eval, minlength=10).tolist())

# %% [markdown]
# ## 1 · Two models: standard and adversarially trained
#
# **Standard training** minimises the cross-entropy on clean images. **Adversarial training** (Madry et al.) replaces
# each training batch by PGD adversarial examples crafted on the current model,
#
# $$\min_\theta \; \mathbb{E}_{(x, y)} \Big[ \max_{\|\delta\|_\infty \le \varepsilon} \mathcal{L}\big(f_\theta(x + \delta), y\big) \Big],$$
#
# so each epoch costs about `AT_STEPS + 1` times as much (the cpu profile uses a short 3-step PGD with step
# 2.5·ε/3 to stay quick). Both runs are saved under `runs/` and reused next time.

# %%
std_config = presets.make_config(DATASET, method="standard", epochs=EPOCHS, seed=SEED, device=DEVICE)
at_config = presets.make_config(DATASET, method="pgd_at", epochs=AT_EPOCHS, eps=EPS, attack_steps=AT_STEPS,
                                step_size=2.5 * EPS / AT_STEPS, val_attack_steps=AT_STEPS, seed=SEED, device=DEVICE)
std_model, _ = training.train_or_load(std_config, f"runs/{PROFILE}/{DATASET}_standard", progress=True, dataset=ds)
at_model, _ = training.train_or_load(at_config, f"runs/{PROFILE}/{DATASET}_pgd_at", progress=True, dataset=ds)
models = {"STD": std_model, "AT": at_model}

# %% [markdown]
# Before looking inside, check that the two models really differ in robustness: accuracy under PGD-10
# as ε grows (notebook 01 explains the curve). The AT model should hold up far better around its training budget
# ε = 0.1, at a small cost, if any, in natural accuracy.

# %%
curves = {name: evaluation.robustness_curve(m, x_eval, y_eval, [0.0, 0.05, 0.1, 0.15, 0.2], attacks=("pgd",),
                                       steps=10, seed=SEED) for name, m in models.items()}
plots.accuracy_vs_eps_figure(curves, title=f"STD vs AT: accuracy vs ε on {len(x_eval)} test digits")

# %% [markdown]
# ## 2 · Capturing the penultimate channel activations
#
# Every cas_edu model has `forward_details(x)`, which returns — besides the logits — the activations of each named
# layer. For `SmallCNN` the last convolutional block, `block3`, outputs $C = 128$ channels (after its ReLU and
# max-pool, a 2×2 map for 8×8 inputs); the paper uses the 512 channels of ResNet-18's `layer4`. Like the paper's
# scripts, `activations.channel_activations` averages each channel over space, giving one vector per image:
#
# $$a_{n,c} = \frac{1}{HW} \sum_{h,w} f_{n,c,h,w} \;\ge 0 \qquad (n = \text{image}, \; c = \text{channel}).$$

# %%
# NBVAL_CHECK_OUTPUT
acts = activations.channel_activations(std_model, x_eval)
print("activations:", tuple(acts.shape), "| layer:", std_model.resolve_layer(None), "| all ≥ 0:", bool((acts >= 0).all()))

# %% [markdown]
# ## 3 · The paper's two quantities
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
# The paper uses 1,000 test images of one class (class 0) and PGD-20 at ε = 8/255 on the same model (step
# 0.003, random start; on CAS models the adaptive objective). `activations.compare_activations` does exactly
# this by default — the official step scaled to our ε (ε · 0.003 / (8/255)) — and computes both figures'
# curves; the explorer below passes `steps=PGD_STEPS` (10 in the `cpu` profile, to stay quick; 20 otherwise). (The official script averages batch results as a running `(old + new) / 2`; we compute the true
# mean.) Digits have only about 20 test images per class in the cpu profile, so we look at class `CLASS_ID` *and*
# at all classes together.
#
# We will also want to vary ε, the class and the model interactively (section 5), so we build the
# `widgets.ActivationExplorer` now: it runs `compare_activations` once per model and per ε on its slider
# (the progress bar), on all the images; any class is then a selection of those rows. The figures below read
# from the same cache.

# %%
explorer = widgets.ActivationExplorer(models, x_eval, y_eval, ds.classes, eps=EPS, eps_max=0.2,
                                      eps_step=0.05 if PROFILE == "cpu" else 0.025, class_id=CLASS_ID,
                                      steps=PGD_STEPS, seed=SEED)
per_class = {name: explorer.comparison(name, EPS, class_id=CLASS_ID) for name in models}
all_classes = {name: explorer.comparison(name, EPS) for name in models}

# %%
# NBVAL_CHECK_OUTPUT
print(f"class {CLASS_ID}: {per_class['STD'].n_examples} images; all classes: {all_classes['STD'].n_examples} images; "
      f"{per_class['STD'].natural.shape[1]} channels")

# %% [markdown]
# ### Figure 1 — magnitude

# %%
plots.magnitude_figure(per_class, title=f"Figure 1 (class {CLASS_ID}): channel magnitude, natural vs adversarial")

# %%
plots.magnitude_figure(all_classes, title="Figure 1 (all classes): channel magnitude, natural vs adversarial")

# %% [markdown]
# ### Figure 2 — activation counts

# %%
plots.count_figure(per_class, title=f"Figure 2 (class {CLASS_ID}): examples activating each channel")

# %%
plots.count_figure(all_classes, title="Figure 2 (all classes): examples activating each channel")


# %% [markdown]
# ### The same in numbers
#
# `ActivationComparison.summary()` condenses each comparison into a few scalars: the ratio of mean activations
# (adversarial ÷ natural; > 1 means observation 1), the normalised entropy of how activation mass spreads over channels
# (1 = perfectly uniform; higher for adversarial means observation 2), and the average fraction of channels each image
# activates. The next cell adds two numbers read straight off the figures: how much larger the *top-10* channel
# magnitudes are for adversarial images, and how many channels natural images of the class mostly leave quiet
# (activated by fewer than half of them) — and how many of those adversarial images switch on.

# %%
def figure_facts(c):
    top = c.adversarial_magnitudes[:10].mean() / c.natural_magnitudes[:10].mean()
    quiet = c.natural_counts < c.n_examples / 2
    woken = quiet & (c.adversarial_counts >= c.n_examples / 2)
    return f"top-10 magnitude adv ÷ nat = {top:.2f}; quiet channels: {int(quiet.sum())}, woken by PGD: {int(woken.sum())}"


for scope, comparisons in ((f"class {CLASS_ID}", per_class), ("all classes", all_classes)):
    print(f"== {scope} ==")
    print(plots.summary_table(comparisons))
    for name, c in comparisons.items():
        print(f"{name}: {figure_facts(c)}")
    print()

# %% [markdown]
# ## 4 · What our data shows — and where it differs from the paper
#
# Read the figures and numbers above with the paper's claims in mind. The exact values depend on the run; the
# pattern below is what we saw with the cpu profile (check whether it still holds in yours, and in the full profile):
#
# * **Observation 1 (magnitude) holds only partly.** Over all classes, the STD model's *largest* adversarial
#   magnitudes exceed the natural ones (top-10 ratio about 1.1 in our run), as in the paper's Figure 1, while for the AT
#   model the ratio is at or below 1 — AT removes the effect, as the paper says. But the *mean* activation of
#   adversarial images is *smaller* for both models (the first ratio in the table is below 1): PGD boosts a few
#   channels and lowers many others. And within class 0 alone (about 20 images) even the top magnitudes are lower
#   for adversarial images — the opposite of the paper's class-0 figure.
# * **Observation 2 (uniformity) is there, but faint.** With the paper's 1 % threshold almost every channel counts as
#   activated by almost every image (fraction activated ≥ 0.95 for both models), so Figure 2 is nearly flat. A spatial
#   mean over a 2×2 map after a ReLU is rarely below 1 % of the image's strongest channel, whereas ResNet-18's 512
#   `layer4` channels are much sparser. What remains lives in the right-hand tail of Figure 2: the few channels that
#   natural images of class 0 leave quiet are switched on by the adversarial images, and the class-0 channel entropy
#   is higher for adversarial images — for the AT model too, which matches the paper's claim that AT does not remove
#   observation 2.
# * **So the small digits network is a faithful place to learn the quantities, not to confirm the paper's effect
#   sizes.** The paper's pictures come from a deep network on natural images; a three-block CNN on 8×8 digits has
#   dense, redundant channels. The full-scale reproduction (`python -m cas_edu train` on CIFAR-10) is where the
#   paper's claims are tested; Exercise 3 shows how much the conclusion depends on the 1 % threshold.
#
# ## 5 · Interactive: ε, class and model
#
# Move **ε** (PGD-`PGD_STEPS` on the same images, seeded), pick a **class** and toggle **STD / AT**. Both figures and
# the table of summaries update. PGD already ran for every (model, ε) when we built the explorer in section 3, so
# moving the controls only recomputes the statistics.
#
# Try: at ε = 0 the two curves coincide (nothing is attacked); as ε grows, watch the STD model's top magnitudes rise
# while the AT model's barely move; compare the right-hand tail of Figure 2 between classes.

# %%
explorer.widget

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
# (`activations.activation_counts(acts, threshold)` on `all_classes["STD"].natural` and `.adversarial`).
# Does observation 2 become visible? Is a conclusion that depends this much on a threshold a robust one?

# %% jupyter={"source_hidden": true} tags=["solution"]
# Worked solution
c = all_classes["STD"]
for threshold in (0.01, 0.1, 0.3):
    natural = activations.activation_counts(c.natural, threshold)
    adversarial = activations.activation_counts(c.adversarial, threshold)
    print(f"threshold {threshold:>4}: fraction activated natural {activations.fraction_activated(c.natural, threshold):.2f}, "
          f"adversarial {activations.fraction_activated(c.adversarial, threshold):.2f}; "
          f"channels activated more often by adversarial images: {int((adversarial > natural).sum())} of {len(natural)}")
# With a higher threshold fewer channels count as activated and differences between natural and adversarial
# images can appear or vanish. The paper's 1 % is a choice; a claim about "uniformity" is strongest when it
# holds across thresholds (or with a threshold-free measure such as the channel entropy in the summary table).

# %% [markdown]
# ### Exercise 4 · Why would AT remove observation 1 but not observation 2?
#
# Think about what adversarial training optimises, then read the answer below.

# %% [markdown] jupyter={"source_hidden": true} tags=["solution"]
# *Worked answer:* AT trains the network to give the right answer on PGD examples, so it learns features whose
# *size* an attacker cannot easily inflate: large adversarial magnitudes would move the logits and are penalised by
# the loss. Nothing in the loss, however, asks *which* channels a class may use — a misclassified adversarial example
# can still light up channels that belong to other classes, as long as the final decision survives. CAS adds exactly
# that missing pressure: an auxiliary classifier per CAS layer whose weights for the true class re-weight (suppress) the
# channels that class does not need. Notebook 03 builds it.
