"""Model-card templates (installed as `diffusers_specreg.model_cards` data; see `diffusers_specreg.model_card`)."""
