"""``daefr-report``: accuracy against eager fp32 versus speed, for every available backend."""
