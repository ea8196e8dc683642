import math

import torch
import torch.nn.functional as F

from charlm.config import ModelConfig
from charlm.inference.stream_scoring import Score, evaluate
from charlm.models.charrnn import CharRNN


def test_bpc_is_nats_over_ln2_and_perplexity_is_exp():
    result = Score(tokens=10, loss=1.0)
    assert result.bpc == 1.0 / math.log(2)
    assert result.perplexity == math.e


def test_evaluate_equals_a_direct_computation():
    torch.manual_seed(0)
    model = CharRNN(13, ModelConfig(embedding_dim=4, hidden_size=8, num_layers=1)).eval()
    stream = torch.randint(0, 13, (301,))
    with torch.no_grad():
        logits, _ = model(stream[:-1].unsqueeze(0))
        expected = F.cross_entropy(logits[0], stream[1:]).item()
    result = evaluate(model, stream, batch_size=1, device=torch.device("cpu"))
    assert result.tokens == 300
    assert math.isclose(result.loss, expected, rel_tol=1e-5)
    # More rows: same tokens scored, each row starts from a fresh state.
    wide = evaluate(model, stream, batch_size=7, device=torch.device("cpu"))
    assert wide.tokens == 300 and abs(wide.loss - expected) < 0.05
