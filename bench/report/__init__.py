"""Results: tables, figures, claim verdicts, the rate-distortion view, image sheets."""
