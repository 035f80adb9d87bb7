"""The Python client for product apps: predict, send feedback, send events; retries and typed errors.

```python
from mlops.client import Client

with Client() as mlops:     # addresses and token as the CLI finds them; or Client(router="http://...", token=...)
    mlops.send_events("loans", [{"entity_id": "a1", "salary": 52000.0, ...}])
    p = mlops.predict("loans", features={"salary": 52000.0, ...}, unit_id="user-7")
    mlops.feedback(p.prediction_id, label=1)
```
"""

from mlops.client.client import Client, IngestResult, Prediction

__all__ = ["Client", "IngestResult", "Prediction"]
