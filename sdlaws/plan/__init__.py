"""sdlaws.plan"""
