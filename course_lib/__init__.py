"""course_lib: the JAX/Flax NNX library behind the workbook.

The workbook is 《生成式AI的三种人机协同模式：JAX 实践》.

Modules (each names the chapter that teaches it):

- ``data``      real datasets, shipped or read from installed packages (chapter 5.1)
- ``vae``       variational autoencoders, loss and jitted train step (chapters 3.1, 4.1, 5.2.1)
- ``gan``       DCGAN / MLP GAN, losses and one jitted D-then-G step (chapters 3.2, 4.2, 5.2.2)
- ``rnn``       character language model and time-series regressor (chapters 3.3, 4.3, 5.2.3)
- ``train``     one training loop for all models: progress, history, checkpoints (chapter 5.2)
- ``parallel``  data parallelism over all local devices with ``jax.sharding`` (chapter 5.1)
- ``metrics``   negative ELBO, FD-LeNet, class coverage, bits per character, RMSE (chapter 5.3)
- ``recipes``   the quick (CPU) and full (GPU) training recipes used by the CLI and chapter 5
"""

__version__ = "0.1.0"
