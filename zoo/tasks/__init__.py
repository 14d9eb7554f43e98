"""Tasks as registered objects: ``get_task(name)`` / ``task_for(name, **context)``.

Built in: ``classification`` (one text or a pair, N named classes),
``multi-label-classification`` (any subset of N named labels), ``regression`` (one float
per text or pair), ``token-classification`` (one tag per word), ``mlm`` (masked-LM
pre-training) and ``sentence-embedding`` (a bi-encoder on text pairs, scored or not). A
head's ``kind`` names its task. Distillation builds its own task on the same interface
(``zoo.distill.distill_task``). A new task: a module with a ``Task`` subclass
and one ``register_task`` line below.
"""

from zoo.tasks.base import (IGNORE, Task, get_task, pearson, rankdata, register_task,  # noqa: F401
                            spearman, task_for, task_names)
from zoo.tasks.classification import (Classification, ClassificationMetrics,  # noqa: F401
                                      Prediction, confusion_f1, confusion_mcc)
from zoo.tasks.mlm import MaskedLM, MaskingConfig, MLMMetrics, mask_tokens  # noqa: F401
from zoo.tasks.multi_label import (LabelSet, MultiLabelClassification,  # noqa: F401
                                   MultiLabelMetrics)
from zoo.tasks.regression import Regression, RegressionMetrics, Score  # noqa: F401
from zoo.tasks.sentence_embedding import (EmbeddingMetrics, SentenceEmbedding,  # noqa: F401
                                          cosine_loss, ranking_loss)
from zoo.tasks.token_classification import (Entity, Tagged, TokenClassification,  # noqa: F401
                                            TokenMetrics)

CLASSIFICATION = register_task(Classification())
MULTI_LABEL = register_task(MultiLabelClassification())
REGRESSION = register_task(Regression())
TOKEN_CLASSIFICATION = register_task(TokenClassification())
MLM = register_task(MaskedLM())
SENTENCE_EMBEDDING = register_task(SentenceEmbedding())
