"""One inference path: predictions and embeddings for a database task or for image files.

* :func:`predict` / :func:`predict_task`: decoded predictions of a task head (arrays,
  tensors, image paths, or a database split); trainer validation
  (:func:`medfoundry.training.evaluate`), transfer runs and the demo use them;
* :func:`embed` / :func:`features`: frozen pooled embeddings and multi-scale feature maps;
  ``medfoundry extract`` and the frozen-transfer feature cache use them;
* :func:`run_batches`: the one batching loop under both (also for heads on cached features).

Hooks for later work (no caller changes needed):

* the **predictor** step (:mod:`.predictors`): ``predictor(model, task, image) -> raw output``;
  pass ``predictor=`` to :func:`predict` / :func:`predict_task` (and through
  ``medfoundry.training.evaluate``). Sliding-window 3D prediction
  (:mod:`medfoundry.inference.sliding_window`), test-time augmentation (:func:`.predictors.tta`),
  test-time adaptation (:class:`medfoundry.robustness.head_adapt.HeadAdapter`) and ensembles
  (:mod:`medfoundry.robustness.head_eval`) are predictor wrappers, chained with :func:`compose`;
* decoding stays the head's ``decode`` and scoring the kind's ``metrics``
  (:mod:`medfoundry.tasks`), so a new task kind needs nothing here.
"""

from .batches import batch_targets as batch_targets
from .batches import move_to as move_to
from .embed import embed as embed
from .embed import features as features
from .embed import task_images as task_images
from .predict import TaskPredictions as TaskPredictions
from .predict import as_image_batches as as_image_batches
from .predict import predict as predict
from .predict import predict_task as predict_task
from .predict import run_batches as run_batches
from .predictors import Predictor as Predictor
from .predictors import compose as compose
from .predictors import forward as forward

__all__ = ["predict", "predict_task", "TaskPredictions", "embed", "features", "task_images", "run_batches",
           "as_image_batches", "batch_targets", "move_to", "Predictor", "forward", "compose"]
