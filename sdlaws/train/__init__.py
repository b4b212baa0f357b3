"""sdlaws.train"""
