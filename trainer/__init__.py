"""ACE++ training (LCU++ on FLUX.1-Fill)."""
