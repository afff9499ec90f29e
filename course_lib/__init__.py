"""course_lib: the JAX/Flax NNX library behind the workbook.

The workbook is 《生成式AI的三种人机协同模式：JAX 实践》. The modules, in layers: a module imports
only from its own layer or the layers above it in this list (tests/test_architecture.py checks it).

Foundations

- ``pixels``       image batches: checks, binarising, the one translation augmentation (chapter 5.2)
- ``files``        the one atomic file write (chapter 5.2)
- ``parallel``     data parallelism over all local devices with ``jax.sharding`` (chapter 5.1)
- ``plotting``     image grids and Chinese text in figures (chapter 1)
- ``collab``       the person in the loop: one ``Human`` interface; simulated and terminal people
                   (chapter 6)
- ``widgets``      the person in JupyterLab: ipywidgets panels that wait for the answer (chapter 6)

Data

- ``readers``      how each dataset's files become numpy arrays (chapter 1)
- ``downloads``    optional downloads: checksums, a cache, a fast offline error (chapter 1)
- ``data``         the registry of datasets: ``load`` and ``list_datasets`` (chapter 1, 5.1)

Measures

- ``metrics``      small pure functions: bits per dimension, Fréchet distance, RMSE, seasonal naive
- ``ngram``        the Kneser-Ney character n-gram baseline (chapter 5.2.3)
- ``fd_lenet``     FD-LeNet: a small digit classifier, its cache, the distance and class coverage
                   (chapter 5.2.2)
- ``poetics``      the form of a five-character quatrain with pypinyin: rhyme, tones, features (6.5)
- ``audit``        memorisation, membership inference, detectability of samples and the MIG
                   disentanglement score (chapter 8)

Models and training

- ``vae``          variational autoencoders and their loss (chapters 3.1, 4.1, 5.2.1)
- ``gan``          DCGAN / MLP GAN, losses and one jitted D-then-G step (chapters 3.2, 4.2, 5.2.2)
- ``rnn``          character language model and time-series regressor (chapters 3.3, 4.3, 5.2.3)
- ``diffusion``    denoising diffusion (DDPM): the forward process, the noise-prediction loss,
                   a small U-Net for pixels, an MLP for a VAE's codes, DDIM sampling (chapter 8)
- ``transformer``  a decoder-only character Transformer with a KV cache for sampling (chapter 8)
- ``active``       active learning: the label-spreading classifier and the query strategies (6.1)
- ``population``   many settings of the forecaster trained at once with ``jax.vmap`` (6.4)
- ``preference``   learning from comparisons: Bradley-Terry reward model, best-of-n, REINFORCE
                   with a KL penalty (6.5)
- ``checkpoints``  orbax checkpoints keyed by tree path: the ``Checkpoint`` hook (chapter 5.2)
- ``train``        the generic train step and one loop for all models, with hooks (chapter 5.2)

Recipes

- ``recipes``      what to train: the quick (CPU) and full (GPU) recipes and their data (chapter 5)
- ``runs``         how a recipe runs: set up, fit, evaluate, save (chapter 5)
- ``annotation``   the annotation lab: pool, rounds of labelling, pseudo-labels, conditional GAN
                   (chapter 6.1-6.2)
- ``tuning``       the tuning lab: validation years, trials, a person against random, grid and
                   TPE search (chapter 6.4)
- ``feedback``     the feedback lab, poems: comparisons, reward model, fine-tuning (chapter 6.5)
- ``latent_search`` the feedback lab, images: a person steers a search in the VAE's latent space
                   (chapter 6.5)

Command line

- ``cli``          ``python -m course_lib train``, ``collab annotate|tune|feedback``, ``data list``
                   (5.1, 6)
"""

__version__ = "0.1.0"
