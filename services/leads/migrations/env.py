from crmkit.migrations import run_env
from services.leads.db import Base

run_env(Base.metadata)
