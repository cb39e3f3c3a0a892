"""The ``lm`` head's language model and tokenizer: a named tiny random-init config or a local transformers
folder (never a download), LoRA through peft, the report's token ids, and the checkpoint hooks that leave
a frozen folder LM out of checkpoints (with a cheap fingerprint of its weights, checked on load).

transformers, tokenizers and peft are imported inside the functions (``pip install 'milkit[lm]'``), so
milkit imports and registers the head without them.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from milkit.errors import CheckpointError, MilkitError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TinyName = Literal["tiny-gpt2", "tiny-llama", "tiny-qwen2", "tiny-biogpt"]
_SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
          "max_position_embeddings": 1024}
TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny-gpt2": ("gpt2", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 1024}),
    "tiny-llama": ("llama", {**_SMALL, "num_key_value_heads": 2}),
    "tiny-qwen2": ("qwen2", {**_SMALL, "num_key_value_heads": 2}),
    "tiny-biogpt": ("biogpt", dict(_SMALL)),
}
"""Named random-init configs (model_type, sizes): 2 layers, 64 wide; the vocabulary is the trained tokenizer's."""
EOT = "<|endoftext|>"
"""BOS = EOS = PAD of the tokenizers trained for tiny configs."""
LORA_TARGETS: dict[str, list[str]] = {"gpt2": ["c_attn"]}
"""Default LoRA target modules per model_type; any other architecture: ``q_proj``, ``v_proj`` (Llama, Qwen, BioGPT)."""
INSTALL = "pip install 'milkit[lm]'"


def require(*, lora: bool = False) -> None:
    """Fail with the install command when transformers (or, for LoRA, peft) is missing."""
    names = ["transformers", "tokenizers"] + (["peft"] if lora else [])
    for name in names:
        try:
            __import__(name)
        except ImportError as exc:
            raise MilkitError(f"the 'lm' head needs {name} ({exc}); install it: {INSTALL}") from None


def is_tiny(model: str | Path) -> bool:
    return isinstance(model, str) and model in TINY_CONFIGS


def _folder(model: str | Path) -> Path:
    path = Path(model)
    if not (path / "config.json").is_file():
        raise MilkitError(f"[head] model = '{model}': not a folder with config.json (a transformers model saved with "
                          f"save_pretrained); use such a folder or a built-in tiny config: {', '.join(TINY_CONFIGS)}")
    return path


def train_tokenizer(texts: list[str], vocab_size: int) -> str:
    """A byte-level BPE (GPT-2's scheme) trained on ``texts``, as ``tokenizers`` JSON; ``EOT`` is id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok.to_str()


def load_tokenizer(model: str | Path, trained: str | None) -> "PreTrainedTokenizerBase":
    """The trained tokenizer of a tiny config, else the folder's own; PAD falls back to EOS."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if is_tiny(model):
        if trained is None:
            raise MilkitError("the run's target_state.json has no tokenizer for the tiny LM; retrain the run")
        from tokenizers import Tokenizer

        return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(trained), bos_token=EOT, eos_token=EOT,
                                       pad_token=EOT)
    try:
        tok = AutoTokenizer.from_pretrained(_folder(model), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MilkitError(f"[head] model = '{model}': no usable tokenizer in the folder ({exc}); save the model's "
                          "tokenizer there (tokenizer.save_pretrained)") from None
    if tok.eos_token_id is None:
        raise MilkitError(f"[head] model = '{model}': the tokenizer has no EOS token, so reports cannot end")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def build_lm(model: str | Path, tokenizer: "PreTrainedTokenizerBase", *, pretrained: bool) -> "PreTrainedModel":
    """The causal LM in float32: random init for a tiny config (or ``pretrained = false``), else the folder's."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if is_tiny(model):  # no pad_token_id: it would freeze EOS's input embedding (padding_idx); generate gets it
        model_type, sizes = TINY_CONFIGS[str(model)]
        cfg = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), pad_token_id=None, **ids, **sizes)
        lm = AutoModelForCausalLM.from_config(cfg)
    else:
        folder = _folder(model)
        try:
            if pretrained:
                lm = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
            else:
                lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, local_files_only=True))
        except (OSError, ValueError) as exc:
            raise MilkitError(f"[head] model = '{model}': transformers could not load it ({exc})") from None
    n_vocab = lm.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_vocab:
        raise MilkitError(f"[head] model = '{model}': the tokenizer has {len(tokenizer)} tokens but the LM embeds only "
                          f"{n_vocab}")
    # decoding is set by the head's keys only: nothing of a folder's generation_config.json leaks in
    lm.generation_config = GenerationConfig(**ids, pad_token_id=tokenizer.pad_token_id)
    return lm.float()


def max_positions(lm: "PreTrainedModel") -> int | None:
    """The LM's position limit (learned positions: a hard one), or None."""
    cfg = lm.config.get_text_config()
    return getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)


def add_lora(lm: "PreTrainedModel", *, r: int, alpha: float, dropout: float, targets: list[str] | None) -> nn.Module:
    """Inject LoRA adapters in place (peft); only the adapters stay trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    model_type = lm.config.model_type
    targets = targets or LORA_TARGETS.get(model_type, ["q_proj", "v_proj"])
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                        fan_in_fan_out=model_type == "gpt2")  # GPT-2's Conv1D stores weights transposed
    try:
        lm = inject_adapter_in_model(config, lm)
    except ValueError as exc:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in lm.named_modules()
                         if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"})
        raise MilkitError(f"[head] lora_target_modules = {targets} fit no module of this '{model_type}' LM ({exc}); "
                          f"its linear layers are named: {', '.join(linear)}") from None
    for name, p in lm.named_parameters():
        p.requires_grad_("lora_" in name)
    return lm


def fingerprint(tensors: list[Tensor]) -> Tensor:
    """[2] float64 summary (weighted sums of a strided sample of each tensor): detects changed frozen weights."""
    out = torch.zeros(2, dtype=torch.float64)
    for i, t in enumerate(tensors, start=1):
        v = t.detach().flatten().cpu()
        v = v[:: max(1, v.numel() // 4096)].double()
        out += i * torch.stack((v.sum(), (v * v).sum()))
    return out


def report_ids(tokenizer: Any, prompt: str, report: str) -> list[int]:
    """Ids of ``report`` as it follows ``prompt`` (tokenised together, so the boundary is the LM's own)."""
    head = tokenizer(prompt).input_ids
    ids = tokenizer(f"{prompt} {report}" if prompt else report).input_ids
    if ids[: len(head)] == head:
        return ids[len(head):]
    return tokenizer(f" {report}" if prompt else report, add_special_tokens=False).input_ids


def drop_frozen(module: Any, state_dict: dict[str, Tensor], prefix: str, local_metadata: Any) -> None:
    """state_dict post-hook: leave the frozen folder weights out (they are reloaded from the folder)."""
    for key in module._frozen_keys:
        state_dict.pop(f"{prefix}lm.{key}", None)


def keep_frozen(module: Any, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
    """load pre-hook: check the folder weights are the ones trained with, and keep them."""
    saved = state_dict.get(f"{prefix}lm_fingerprint")
    if saved is not None and not torch.equal(saved.cpu(), module.lm_fingerprint.cpu()):
        raise CheckpointError(f"the LM weights in {module.config.model} are not those this checkpoint was trained "
                              "with (their fingerprint differs); restore that folder")
    own = module.lm.state_dict()
    for key in module._frozen_keys:
        state_dict.setdefault(f"{prefix}lm.{key}", own[key])
