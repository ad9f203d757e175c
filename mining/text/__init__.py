"""Text: OCR (PP-OCR), rendering, and confirming text by reading it back."""
