"""Locust load test for the router (or any OpenAI-compatible server): chat requests sharing a few system prompts.

Run it as a process, never import it next to other libraries (locust's gevent monkey-patching breaks ssl):
    locust -f deploy/locustfile.py --headless --users 4 --spawn-rate 4 --run-time 20s \
        --host http://127.0.0.1:8000 --csv results/locust
Bounded by users x run time; each user sends one request, waits 0.1-0.5 s, and sends the next.
"""
import random

from locust import HttpUser, between, task

SYSTEMS = [f"You are the assistant of shop number {i}. Answer briefly and only with facts you were given. " * 8
           for i in range(4)]
QUESTIONS = ["When are you open?", "Do you deliver?", "How much does it cost?", "Can I book online?"]


class ChatUser(HttpUser):
    wait_time = between(0.1, 0.5)

    @task
    def chat(self):
        body = {"messages": [{"role": "system", "content": random.choice(SYSTEMS)},
                             {"role": "user", "content": random.choice(QUESTIONS)}],
                "max_tokens": 8, "temperature": 0, "tier": random.choice(["high", "fast"])}
        with self.client.post("/v1/chat/completions", json=body, catch_response=True, name="chat") as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
            elif "x-backend" not in r.headers:
                r.failure("no x-backend header: not answered through the router")
