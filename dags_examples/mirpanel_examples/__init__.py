"""What the example DAGs share, not DAG files themselves: the warehouse's tables and SQL (``warehouse``)
and the campaign's assets (``campaign_assets``).

The DAGs import it from the DAGs folder, which Airflow puts on ``sys.path``; ``.airflowignore`` keeps
the DAG processor from parsing it.
"""
