"""The launch through the Overlord: the Job of ``launch_mode="airflow"`` (created suspended and unlabelled,
released once the Overlord's runner has the task) and the steps around it."""
