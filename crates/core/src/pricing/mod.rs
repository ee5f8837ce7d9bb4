//! Prices: the genai-prices table in integer form, model resolution and usage → cost.
