"""Architecture families, one folder each. Importing a family registers it and its presets:
adding a family is a folder plus one line here."""

from zoo.models import m2l  # noqa: F401
from zoo.models import bert  # noqa: F401
from zoo.models import roberta  # noqa: F401
from zoo.models import deberta_v2  # noqa: F401
from zoo.models import modernbert  # noqa: F401
