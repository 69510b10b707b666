"""SenseVoiceSmall, POST /v1/audio/transcriptions (OpenAI's multipart shape): any common audio
format, long audio cut at its pauses. The declaration the engine serves it by; funasr is imported
only by the adapter, when the family is served."""

from server.family import Family
from server.models.store import ModelSpec

SPEC = ModelSpec(
    kind="asr",
    served_name="FunAudioLLM/SenseVoiceSmall",
    aliases=("SenseVoiceSmall", "iic/SenseVoiceSmall"),
    repo_id="FunAudioLLM/SenseVoiceSmall",
    required_files=("config.yaml", "model.pt", "am.mvn", "chn_jpn_yue_eng_ko_spectok.bpe.model"),
    download_size=940_000_000,  # approximate: model.pt 0.94 GB, the rest (tokenizer, examples) ~2 MB
)
FAMILY = Family(
    spec=SPEC,
    adapter="server.transcription.model:SenseVoice",
    service="server.transcription.service:TranscriptionService",
    route="server.transcription.route",
    # SenseVoice's cost is in 10 ms frames: the budget is padded audio seconds x 100.
    batch_budget=lambda settings, device_type: int(settings.asr_max_batch_seconds * 100),
    tiny="server.transcription.tiny:build_tiny_sensevoice",
)
