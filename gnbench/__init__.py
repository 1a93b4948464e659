"""gnbench: Gauss-Newton vs SOAP, Muon and AdamW for transformer language-model pretraining."""

__version__ = "0.1.0"
